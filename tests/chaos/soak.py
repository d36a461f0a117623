"""The chaos soak: many targets, many cycles, random faults from a seeded RNG, and the
invariants checked after every cycle.

What is real and what is fake:

- Kubernetes: the in-process API double (resource versions, 409s, validation, watches with
  410 Gone after a compaction, RBAC-free), reached over HTTP by the real ``kubernetes_asyncio``
  client inside the real ``KubeClient``; faults through ``fail_next``, dropped watches and
  direct store edits, mid-cycle ones through ``HookedKube``.
- Configuration: a ConfigMap in the double, followed by the controller's real ConfigMap
  watch (``tests/chaos/config_map.py``); every change the soak makes goes through it.
- Prometheus: ``PrometheusFaultProxy`` in standalone mode, a fake that speaks the real HTTP
  API (``/api/v1/query_range`` JSON) from a deterministic demand function (KV-cache usage
  capped at 1 per pod, and the queue and running counts whose saturation correction gives
  the demand back), so the real ``PrometheusSource`` adapter (requests, parsing, timeouts,
  batched queries) is in the loop. It is not the real Prometheus server (the fault tests
  use that one); a backfilled TSDB cannot follow a fake clock through hours of simulated
  time cheaply.
- Fits: the real process pool (``ProcessFitRunner``, spawned workers, one pool for the
  whole soak) whose workers are really SIGKILLed (``tests/chaos/fit_kill.py``).
- The controller: the real ``Controller`` (config reload, leader election, concurrent cycles,
  restores), stepped with a fake clock, one round = every due target cycles once.

Invariants checked after every round, per target (a violation is recorded, never raised):

1. ``min(base, maxReplicas) <= minReplicas <= maxReplicas``, where ``base`` is the user's own
   value as the harness knows it (initial, hand edits, recreated objects);
2. no raise from bad data: with all data bad, minReplicas never goes above what it was or the
   base, whichever is higher;
3. no lowering while data is bad and younger than ``missingDataHold`` (less the clock skew of
   any leader that kept the hold's clock: a clock ahead by s ends a hold s early);
4. at most one successful patch per HPA per round;
5. no exception out of ``run_due`` (a loop crash) and no ``cycle_failed`` (an internal error);
6. a cycle with any failed or partial query never raises above what the complete data would
   give: the same cycle recomputed on complete data by a copy of the target's reconciler
   (``tests/chaos/twin.py``); on clean cycles the copy must agree with the real one exactly;
7. fitting never stops: a fit fails on the pool only right after a worker was killed, and
   the pool is never reported unusable;
8. the configuration watch never dies: every change written to the ConfigMap is taken (or
   rejected, for a bad one) within seconds, after 401s, 410s and a delete/recreate;
9. a new leader after a failover decides every target in its first round as leader;
10. at the end every target is removed from the configuration: every HPA gets its base back
    and loses our annotations.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    MANAGED_ANNOTATIONS,
)
from predictive_scaler.kube import HpaSnapshot, KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.reconcile import CycleReport
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_api_client, make_hpa

from .config_map import ORIGIN, ConfigMapFeed, counter
from .fit_kill import KillableFits
from .kube_hooks import HookedKube
from .prom_proxy import BAD_DATA_FAULTS, PROMETHEUS_FAULTS, PrometheusFaultProxy
from .twin import Twin, complete_source

DATA_FAULTS = ("empty", "nan", "inf", "partial", "stale")
OUTAGES = ("down", "5xx", "bad_query", "bad_json")
EVERY_OUTAGE = (*OUTAGES, "slow", "hung")
HPA = "nim"
LEASE_NS = "ops"
LEASE = "predictive-scaler"
PODS = 3
REQUESTS_PER_POD = 10.0
"""Requests one pod runs when its KV cache is full; the rest of the demand waits."""
TARGET_PER_POD = 0.7
USAGE, WAITING, RUNNING = "gpu_cache_usage_perc", "num_requests_waiting", "num_requests_running"

QUERY_FAULTS = ("usage_query_failed", "queue_query_failed", "running_query_failed")
"""One query of a target's three fails (or answers empty, NaN or with gaps) alone."""
QUERY_FAULT_METRIC = dict(zip(QUERY_FAULTS, (USAGE, WAITING, RUNNING), strict=True))
QUERY_FAULT_KINDS = ("5xx", "bad_json", "empty", "nan", "partial")

KUBE_FAULTS = (
    "409_storm",
    "429_read",
    "5xx_read",
    "5xx_patch",
    "403_patch",
    "403_event",
    "hpa_recreated_mid_cycle",
    "hpa_deleted",
    "max_lowered_below_min",
    "user_edit_min",
    "lease_lost_mid_patch",
    "kill_9_mid_cycle",
    "bad_config",
    "target_removed",
    "fit_worker_killed",
    "config_apply_failure",
    "configmap_deleted_recreated",
    "watch_401",
    "watch_410",
    "restart_mid_hold",
    "failover_clock_skew",
)


@dataclass(frozen=True)
class SoakSettings:
    targets: int = 20
    rounds: int = 500
    """Every target cycles once per round: cycles = targets x rounds."""
    seed: int = 0
    interval_seconds: float = 60.0
    prometheus_fault_rate: float = 0.02
    """Chance per target and round that a data fault of its series starts (1-10 rounds)."""
    query_fault_rate: float = 0.02
    """Chance per target and round that one of its three queries fails alone (1-6 rounds)."""
    hung_rate: float = 0.002
    """Chance per target and round that its queries hang (accepted, never answered; 1-2
    rounds; each such round costs about 2 s of real time: the client's timeout, twice)."""
    outage_rate: float = 0.03
    """Chance per round that a Prometheus outage starts (1 to ``outage_rounds`` rounds,
    every target)."""
    outage_rounds: int = 6
    kube_fault_rate: float = 0.25
    """Chance per round of one Kubernetes / process fault."""
    slow_share: float = 0.05
    """Share of outages that are ``slow`` (each round of it costs ~1.5 s of real time)."""
    hung_share: float = 0.05
    """Share of outages that are ``hung`` (each round of it costs ~2 s of real time)."""
    twin_sample: float = 0.02
    """Share of the other cycles recomputed by the twin (its fidelity on clean data, and
    the partial-data invariant on bad-data cycles, which hold anyway)."""
    fit_workers: int = 2
    """Worker processes of the real fit pool; 0 fits inline (and no worker can be killed)."""
    cover: bool = False
    """Draw every fault kind once (shuffled) before drawing at random: a short soak then
    injects each kind at least once."""
    hold_seconds: float = 300.0
    restore_rounds: int = 10
    progress_every: int = 0
    """Print a progress line to stderr every this many rounds (0: never)."""


@dataclass
class SoakReport:
    settings: SoakSettings
    rounds: int = 0
    cycles: int = 0
    """Target cycles that ran to a report (killed ones excluded)."""
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    loop_crashes: int = 0
    internal_errors: int = 0
    patches: int = 0
    events: int = 0
    restarts: int = 0
    failovers: int = 0
    restored: int = 0
    bad_data_cycles: int = 0
    partial_cycles: int = 0
    """Cycles with a failed or partial query that still had usable data."""
    twin_checks: int = 0
    """Cycles with a failed or partial query recomputed on complete data."""
    twin_raises: int = 0
    """Of those, cycles that raised."""
    twin_raises_above: int = 0
    """Of those raises, the ones above the complete data's decision (each a violation)."""
    twin_fidelity: int = 0
    """Clean cycles recomputed by the twin, each decided identically."""
    fits: int = 0
    fit_kills: int = 0
    pools_replaced: int = 0
    watch_restarts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    log_counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.loop_crashes and not self.internal_errors

    def render(self) -> str:
        s = self.settings
        lines = [
            f"chaos soak: seed={s.seed} targets={s.targets} rounds={self.rounds} "
            f"interval={s.interval_seconds:g}s fit_workers={s.fit_workers}",
            f"target-cycles (completed): {self.cycles}",
            f"faults injected: {sum(self.faults.values())}",
        ]
        for kind in (*PROMETHEUS_FAULTS, *QUERY_FAULTS, *KUBE_FAULTS, "target_readded"):
            lines.append(f"  {kind:<28} {self.faults.get(kind, 0)}")
        watch = ", ".join(f"{k} {v}" for k, v in sorted(self.watch_restarts.items())) or "none"
        lines += [
            f"cycles on bad data: {self.bad_data_cycles}",
            f"cycles with a failed or partial query but usable data: {self.partial_cycles}",
            f"recomputed on complete data: {self.twin_checks} faulted cycles "
            f"({self.twin_raises} raised, {self.twin_raises_above} of them above the "
            "complete data's decision); "
            f"{self.twin_fidelity} clean cycles, each decided identically",
            f"fits: {self.fits}, fit workers SIGKILLed: {self.fit_kills}, "
            f"pools replaced: {self.pools_replaced}",
            f"config watch restarts: {watch}",
            f"successful patches: {self.patches}, events: {self.events}",
            f"controller restarts: {self.restarts}, failovers: {self.failovers}",
            f"bases restored at the end: {self.restored}/{s.targets}",
            f"invariant violations: {len(self.violations)}",
            f"loop crashes: {self.loop_crashes}",
            f"internal cycle errors: {self.internal_errors}",
            f"wall time: {self.seconds:.1f}s "
            f"({1000 * self.seconds / max(self.cycles, 1):.1f} ms per cycle)",
        ]
        lines += [f"  VIOLATION {v}" for v in self.violations[:20]]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the world


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 3, 0, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class _SkewedClock:
    """Another replica's clock: the soak's true time plus a fixed skew."""

    def __init__(self, true: _Clock, skew_seconds: float) -> None:
        self.true = true
        self.skew = timedelta(seconds=skew_seconds)

    def __call__(self) -> datetime:
        return self.true.now + self.skew


def _namespace(i: int) -> str:
    return f"t{i:02d}"


def _demand_fn(targets: int, seed: int) -> Any:
    """Per namespace: a daily-ish wave between ~0.5 and ~5 pods' worth, plus a deterministic
    wiggle, over ``PODS`` pods. The KV-cache usage of a pod is capped at 1; beyond that the
    requests wait, so usage x (1 + waiting / running) gives the wave back. A pure function of
    (namespace, t, metric)."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, targets)
    periods = rng.uniform(2, 8, targets) * 3600
    peaks = rng.uniform(1.0, 4.5, targets)

    def series(
        namespace: str, ts: npt.NDArray[np.float64], metric: str = USAGE
    ) -> list[tuple[dict[str, str], Any]]:
        if not namespace.startswith("t") or not namespace[1:].isdigit():
            return []
        i = int(namespace[1:])
        if i >= targets:
            return []
        wave = 0.5 + peaks[i] * (1 + np.sin(2 * math.pi * ts / periods[i] + phases[i])) / 2
        wave = wave + 0.05 * np.sin(ts / 97.0 + i)
        usage = np.minimum(1.0, wave / PODS)
        if metric == USAGE:
            per_pod = usage
        elif metric == RUNNING:
            per_pod = REQUESTS_PER_POD * usage
        elif metric == WAITING:
            per_pod = REQUESTS_PER_POD * np.maximum(0.0, wave - PODS) / PODS
        else:
            return []
        per_pod = np.round(per_pod, 5)
        return [({"namespace": namespace, "pod": f"nim-{p}"}, per_pod) for p in range(PODS)]

    return series


def _config(settings: SoakSettings, enabled: set[int], url: str) -> str:
    lines = [
        "prometheus:",
        f"  url: {url}",
        "  timeout: 1s",
        "defaults:",
        f"  interval: {settings.interval_seconds:g}s",
        "  step: 1m",
        "  history: 2h",
        "  minHistory: 0s",
        "  warmup: 5m",
        "  model: persistence",
        "  seasons: []",
        "  refitInterval: 30m",
        "  scaleUpStep: 2",
        "  scaleDownDelay: 3m",
        "  scaleDownStep: 1",
        f"  missingDataHold: {settings.hold_seconds:g}s",
        "  staleAfter: 3m",
        "targets:" if enabled else "targets: []",
    ]
    for i in sorted(enabled):
        lines += [
            f"  - hpa: {{namespace: {_namespace(i)}, name: {HPA}}}",
            "    signals:",
            "      - name: kv_cache",
            f"        query: 'sum({USAGE}{{${{matchers}}}})'",
            f"        queueQuery: 'sum({WAITING}{{${{matchers}}}})'",
            f"        runningQuery: 'sum({RUNNING}{{${{matchers}}}})'",
            f"        targetPerPod: {TARGET_PER_POD}",
        ]
        if i % 4 == 3:
            lines.append("    model: linear")
    return "\n".join(lines) + "\n"


@dataclass
class _TargetState:
    index: int
    base: int
    """The user's own minReplicas, as the harness knows it."""
    max_replicas: int
    prom_fault: str | None = None
    prom_fault_rounds: int = 0
    query_fault: str | None = None
    """One of ``QUERY_FAULTS``; ``query_fault_kind`` is how that query fails."""
    query_fault_kind: str = ""
    query_fault_rounds: int = 0
    bad_since: datetime | None = None
    hold_slack: float = 0.0
    """Seconds of clock skew the current bad run's hold may lose (see invariant 3)."""
    managed: bool = True
    deleted_rounds: int = 0

    @property
    def namespace(self) -> str:
        return _namespace(self.index)


class _LogCounter:
    """A structlog processor that counts events and drops them (a soak logs a lot)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    def __call__(self, _logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        name = str(event_dict.get("event"))
        self.counts[name] += 1
        if name in {"cycle_failed", "task_failed"} and len(self.failures) < 20:
            self.failures.append(f"{name}: {event_dict.get('error')}")
        raise structlog.DropEvent


@contextlib.contextmanager
def _counting_logs() -> Iterator[_LogCounter]:
    counter = _LogCounter()
    old = structlog.get_config()
    structlog.configure(processors=[counter], cache_logger_on_first_use=False)
    try:
        yield counter
    finally:
        structlog.configure(**old)


async def _inline_fit(fit: Any) -> Any:
    return fit()


class _ReadsRecorder(HookedKube):
    """``HookedKube`` that also keeps the snapshots each target's cycle read this round (the
    twin recomputes the cycle on exactly the first of them)."""

    def __init__(self, inner: KubeClient) -> None:
        super().__init__(inner)
        self.reads: dict[str, list[HpaSnapshot]] = {}

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        snapshot = await self.inner.read_hpa(namespace, name)
        self.reads.setdefault(namespace, []).append(snapshot)
        await self._fire(self._after_read, snapshot)
        return snapshot


class _Picker:
    """Random choices of fault kinds; with ``cover``, each kind once (shuffled) first."""

    def __init__(self, rng: random.Random, cover: bool) -> None:
        self.rng = rng
        self.cover = cover
        self._left: dict[tuple[str, ...], list[str]] = {}

    def __call__(self, kinds: Sequence[str]) -> str:
        if self.covering(kinds):
            return self._left[tuple(kinds)].pop()
        return self.rng.choice(kinds)

    def covering(self, kinds: Sequence[str]) -> bool:
        """Whether some kind of ``kinds`` is still to be drawn for the first time."""
        key = tuple(kinds)
        if not self.cover:
            return False
        if key not in self._left:
            left = list(kinds)
            self.rng.shuffle(left)
            self._left[key] = left
        return bool(self._left[key])

    def again(self, kinds: Sequence[str], kind: str) -> None:
        """``kind`` could not be injected now: draw it again later (first, when covering)."""
        if self.cover and tuple(kinds) in self._left:
            self._left[tuple(kinds)].insert(0, kind)


# ---------------------------------------------------------------------------- the soak


class Soak:
    def __init__(self, settings: SoakSettings) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.twin_rng = random.Random(settings.seed + 1)
        self.pick = _Picker(self.rng, settings.cover)
        self.report = SoakReport(settings)
        self.clock = _Clock()
        self.targets = [
            _TargetState(i, self.rng.randint(1, 3), self.rng.randint(6, 12))
            for i in range(settings.targets)
        ]
        self.generation = 0
        self.internal_from_dead = 0
        self.outage: str | None = None
        self.outage_rounds = 0
        self.skew: dict[int, float] = {}
        """Clock skew of each controller made (by id), 0 for the soak's own clock."""
        self.standby: Controller | None = None
        self.standby_feed: ConfigMapFeed | None = None
        self.standby_rounds = 0
        self.failover_pending = False
        self.configmap_good = True
        self.watch_restarts: Counter[str] = Counter()

    # ------------------------------------------------------------------ setup

    async def run(self) -> SoakReport:
        started = time.perf_counter()
        with _counting_logs() as logs:
            self.server = KubeDouble()
            await self.server.start()
            self.api = make_api_client(self.server.url, self.server.token)
            self.kube = KubeClient(self.api, reporting_instance="soak")
            series = _demand_fn(self.s.targets, self.s.seed)
            self.prom = PrometheusFaultProxy(series=series, by_metric=True)
            await self.prom.start()
            self.complete = PrometheusFaultProxy(series=series, by_metric=True)
            await self.complete.start()
            self.complete_source = complete_source(self.complete.url)
            self.fits = KillableFits(self.s.fit_workers, self.rng, timeout_seconds=120.0)
            self.feed = ConfigMapFeed(self.server)
            self.intruder = LeaderElector(self.kube, LEASE_NS, LEASE, "intruder", clock=self.clock)
            self.intruder_rounds = 0
            self.controller: Controller | None = None
            try:
                for t in self.targets:
                    self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))
                self.feed.write(self._config_text())
                await self._start_controller()
                for _ in range(self.s.rounds):
                    await self._round()
                    self._progress(started)
                await self._final_restore()
            finally:
                for feed in (self.feed, self.standby_feed):
                    if feed is not None:
                        await feed.stop()
                for made in (self.controller, self.standby):
                    if made is not None:
                        await made.aclose()
                self.fits.close()
                self.complete_source.close()
                await self.complete.close()
                await self.prom.close()
                await self.api.close()
                await self.server.close()
        r = self.report
        r.log_counts = logs.counts
        assert self.controller is not None
        self._retire(self.controller)
        r.internal_errors = self.internal_from_dead
        r.violations += [f"logged {f}" for f in logs.failures]
        r.events = len(self.server.list_events())
        r.fits = self.fits.outcomes.fits
        r.fit_kills = self.fits.outcomes.kills
        r.pools_replaced = self.fits.pools_replaced
        r.watch_restarts = self.watch_restarts
        r.seconds = time.perf_counter() - started
        return r

    def _progress(self, started: float) -> None:
        r, every = self.report, self.s.progress_every
        if every and r.rounds % every == 0:
            print(
                f"round {r.rounds}/{self.s.rounds}: {r.cycles} target-cycles, "
                f"{sum(r.faults.values())} faults, {len(r.violations)} violations, "
                f"{time.perf_counter() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def _internal_errors(self, controller: Controller) -> int:
        """``cycle_failed`` as counted by the controller's own metric."""
        return int(counter(controller, controller.metrics.cycle_errors, kind="internal"))

    def _retire(self, controller: Controller) -> None:
        """A controller leaves the soak: keep its counts."""
        self.internal_from_dead += self._internal_errors(controller)
        for reason in ("unauthorized", "forbidden", "expired", "disconnected", "error", "closed"):
            value = counter(controller, controller.metrics.config_watch_restarts, reason=reason)
            if value:
                self.watch_restarts[reason] += int(value)

    def _make_controller(self, skew_seconds: float = 0.0) -> Controller:
        self.generation += 1
        clock: Any = self.clock if not skew_seconds else _SkewedClock(self.clock, skew_seconds)
        elector = LeaderElector(
            self.kube, LEASE_NS, LEASE, f"controller-{self.generation}", clock=clock
        )
        controller = Controller(
            _ReadsRecorder(self.kube),  # type: ignore[arg-type]
            prometheus_url=self.prom.url,
            clock=clock,
            elector=elector,
            fit_runner=self.fits,
            config_origin=ORIGIN,
        )
        self.skew[id(controller)] = skew_seconds
        return controller

    async def _start_controller(self, skew_seconds: float = 0.0) -> None:
        """A new process: its configuration comes from the ConfigMap, as ``run --config-map``
        takes it (it waits for a good one before anything else, so a ConfigMap left bad is
        fixed first, as an operator would before a rollout)."""
        self.controller = self._make_controller(skew_seconds)
        self._repair_config_map()
        if not await self.feed.follow(self.controller):
            self._violation("a new controller's ConfigMap watch never delivered the config")

    def _repair_config_map(self) -> None:
        if not self.configmap_good:
            self.feed.write(self._config_text())
            self.configmap_good = True

    @property
    def hooked(self) -> _ReadsRecorder:
        assert self.controller is not None
        hooked = self.controller.kube
        assert isinstance(hooked, _ReadsRecorder)
        return hooked

    @property
    def leader_skew(self) -> float:
        return self.skew.get(id(self.controller), 0.0)

    def _config_text(self) -> str:
        enabled = {t.index for t in self.targets if t.managed}
        return _config(self.s, enabled, "http://prometheus.invalid:9090")

    def _hpa(self, t: _TargetState) -> dict[str, Any] | None:
        return self.server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, HPA)

    def _hpa_path(self, t: _TargetState) -> str:
        return f"/namespaces/{t.namespace}/horizontalpodautoscalers/{HPA}$"

    def _violation(self, what: str) -> None:
        self.report.violations.append(f"round {self.report.rounds}: {what}")

    # ------------------------------------------------------------------ one round

    async def _round(self) -> None:
        assert self.controller is not None
        self.clock.advance(self.s.interval_seconds)
        self.report.rounds += 1
        self.fits.round = self.report.rounds
        self._prometheus_faults()
        kill = await self._kube_fault()
        before = {t.index: self._hpa(t) for t in self.targets}
        if self.intruder_rounds > 0:
            self.intruder_rounds -= 1
            await self.intruder.try_acquire_or_renew(self.clock())
            if self.intruder_rounds == 0:
                await self.intruder.release(self.clock())
        with contextlib.suppress(Exception):
            await self.controller.renew_leadership()
        twins = self._take_twins()
        self.hooked.reads.clear()
        mark = len(self.server.requests)
        reports: dict[str, CycleReport] = {}
        try:
            if kill:
                await self._kill_mid_cycle()
            else:
                for report in await self.controller.run_due():
                    reports[report.namespace] = report
        except Exception as error:  # a loop crash: recorded, the soak goes on
            self.report.loop_crashes += 1
            self._violation(f"run_due raised {error!r}")
        self._check_failover(reports)
        await self._standby_round()
        self._check(before, reports, mark)
        await self._check_twins(twins, reports)
        self._check_fits()

    def _prometheus_faults(self) -> None:
        """Data faults per target (its series empty, NaN, +Inf, partial or stale), a hang of
        one target's queries, one query of a target's three failing alone, and, less often,
        outages of the whole server (down, slow, hung, 5xx, rejected query, not JSON), which
        fail every target's query alike (batched or not)."""
        s = self.s
        if self.outage is not None:
            self.outage_rounds -= 1
            if self.outage_rounds <= 0:
                self.outage = None
                self.prom.set_fault(None)
        if self.outage is None and self.rng.random() < s.outage_rate:
            draw = self.rng.random()
            if self.pick.covering(EVERY_OUTAGE):
                kind = self.pick(EVERY_OUTAGE)
            elif draw < s.slow_share:
                kind = "slow"
            elif draw < s.slow_share + s.hung_share:
                kind = "hung"
            else:
                kind = self.pick(OUTAGES)
            self.outage, self.outage_rounds = kind, self.rng.randint(1, s.outage_rounds)
            self.prom.set_fault(kind, **({"slow_seconds": 1.5} if kind == "slow" else {}))
            self.report.faults[kind] += 1
        for t in self.targets:
            if t.prom_fault is not None:
                t.prom_fault_rounds -= 1
                if t.prom_fault_rounds <= 0:
                    t.prom_fault = None
                    self.prom.set_fault(None, t.namespace)
            if t.query_fault is not None:
                t.query_fault_rounds -= 1
                if t.query_fault_rounds <= 0:
                    self.prom.set_query_fault(None, t.namespace, QUERY_FAULT_METRIC[t.query_fault])
                    t.query_fault = None
            if t.prom_fault is None and self.rng.random() < s.hung_rate:
                t.prom_fault, t.prom_fault_rounds = "hung", self.rng.randint(1, 2)
                self.prom.set_fault("hung", t.namespace)
                self.report.faults["hung"] += 1
            if t.prom_fault is None and self.rng.random() < s.prometheus_fault_rate:
                kind = self.pick(DATA_FAULTS)
                t.prom_fault, t.prom_fault_rounds = kind, self.rng.randint(1, 10)
                self.prom.set_fault(kind, t.namespace)
                self.report.faults[kind] += 1
            if t.query_fault is None and self.rng.random() < s.query_fault_rate:
                which = self.pick(QUERY_FAULTS)
                t.query_fault, t.query_fault_rounds = which, self.rng.randint(1, 6)
                t.query_fault_kind = self.pick(QUERY_FAULT_KINDS)
                self.prom.set_query_fault(
                    t.query_fault_kind, t.namespace, QUERY_FAULT_METRIC[which]
                )
                self.report.faults[which] += 1

    def _usage_fault(self, t: _TargetState) -> tuple[str, str | None]:
        """Where the fault of the target's usage query comes from and its kind, as the proxy
        picks it: the usage query's own fault, else the namespace's, else the outage's (a
        narrower fault replaces a wider one: a usage query with gaps during the namespace's
        ``empty`` still answers)."""
        if t.query_fault == "usage_query_failed":
            return "query", t.query_fault_kind
        if t.prom_fault is not None:
            return "prom", t.prom_fault
        return "outage", self.outage

    def _bad_fault(self, t: _TargetState) -> bool:
        """Whether the harness's faults leave the target no usable new data."""
        return self._usage_fault(t)[1] in BAD_DATA_FAULTS

    def _faulted(self, t: _TargetState) -> bool:
        """Whether any of the target's queries fails or answers partly this round."""
        return self.outage is not None or t.prom_fault is not None or t.query_fault is not None

    async def _kube_fault(self) -> bool:
        """Arm at most one Kubernetes / process fault for this round; True for a kill -9."""
        for t in self.targets:  # deleted HPAs come back after a while, as new objects
            if t.deleted_rounds > 0:
                t.deleted_rounds -= 1
                if t.deleted_rounds == 0 and self._hpa(t) is None:
                    t.base = self.rng.randint(1, min(3, t.max_replicas))
                    self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))
        if self.rng.random() >= self.s.kube_fault_rate:
            return False
        kind = self.pick(KUBE_FAULTS)
        injected = await self._inject(kind)
        if injected is None:
            self.pick.again(KUBE_FAULTS, kind)
            return False
        self.report.faults[injected] += 1
        return injected == "kill_9_mid_cycle"

    async def _inject(self, kind: str) -> str | None:
        """Inject one Kubernetes / process fault; the kind injected, None when it does not
        apply now (no HPA to delete, no target holding, a failover already under way)."""
        t = self.rng.choice(self.targets)
        path = self._hpa_path(t)
        server = self.server
        if kind == "409_storm":
            server.fail_next("PATCH", path, 409, times=self.rng.randint(1, 6))
        elif kind == "429_read":
            server.fail_next("GET", path, 429, headers={"Retry-After": "2"})
        elif kind == "5xx_read":
            server.fail_next("GET", path, self.rng.choice([500, 502, 503, 504]))
        elif kind == "5xx_patch":
            server.fail_next("PATCH", path, self.rng.choice([500, 503]))
        elif kind == "403_patch":
            server.fail_next("PATCH", path, 403)
        elif kind == "403_event":
            server.fail_next("POST", f"/namespaces/{t.namespace}/events$", 403, times=3)
        elif kind == "hpa_recreated_mid_cycle":
            self.hooked.after_read(self._recreate_hook(t), namespace=t.namespace)
        elif kind == "hpa_deleted":
            if self._hpa(t) is None:
                return None
            server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, HPA)
            t.deleted_rounds = self.rng.randint(1, 5)
        elif kind == "max_lowered_below_min":
            if not self._user_lowers_max(t):
                return None
        elif kind == "user_edit_min":
            if not self._user_edits_min(t):
                return None
        elif kind == "lease_lost_mid_patch":
            self.hooked.before_patch(self._lose_lease)
        elif kind == "kill_9_mid_cycle":
            pass  # run in place of the round's cycles
        elif kind in ("bad_config", "config_apply_failure"):
            texts = _BAD_CONFIGS if kind == "bad_config" else _UNAPPLIABLE_CONFIGS
            self.configmap_good = False
            if not await self.feed.change(self.rng.choice(texts), result="rejected"):
                self._violation(f"{kind}: the ConfigMap change was neither taken nor rejected")
        elif kind == "target_removed":
            t.managed = not t.managed
            await self._write_good_config(kind)
            if t.managed:
                kind = "target_readded"
        elif kind == "fit_worker_killed":
            if self.rng.random() < 0.5 or not self.fits.kill_idle():
                self.fits.kill_during_next_fit()
        elif kind == "configmap_deleted_recreated":
            if not await self.feed.delete():
                self._violation("the ConfigMap's deletion was not reported")
            self.configmap_good = False
            await self._write_good_config(kind)
        elif kind in ("watch_401", "watch_410"):
            if kind == "watch_401":
                self.feed.refuse_relist(401)
            else:
                self.feed.expire_watch()
            if self.configmap_good:
                if not await self.feed.touch(self._config_text()):
                    self._violation(f"{kind}: the watch took no change after the fault")
            else:
                await self._write_good_config(kind)
        elif kind == "restart_mid_hold":
            if not await self._restart_mid_hold():
                return None
        elif kind == "failover_clock_skew":
            if self.standby is not None or self.failover_pending:
                return None
            await self._start_standby()
        return kind

    async def _write_good_config(self, why: str) -> None:
        self.configmap_good = True
        if not await self.feed.change(self._config_text(), result="applied"):
            self._violation(f"{why}: a good ConfigMap change was not taken")

    def _recreate_hook(self, t: _TargetState) -> Any:
        def recreate(_snapshot: HpaSnapshot) -> None:
            self.server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, HPA)
            t.base = self.rng.randint(1, min(3, t.max_replicas))
            self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))

        return recreate

    async def _lose_lease(self, _snapshot: HpaSnapshot) -> None:
        # Our renewals stopped working long enough for the lease to expire; another replica
        # takes it, between our decision and our write, and keeps it for a few rounds. The
        # intruder sees our record unchanged for a lease duration on its clock (the
        # observed-time rule), so it looks once before the time passes.
        await self.intruder.try_acquire_or_renew(self.clock())
        self.clock.advance(16)
        await self.intruder.try_acquire_or_renew(self.clock())
        self.intruder_rounds = self.rng.randint(1, 4)

    def _user_edits_min(self, t: _TargetState) -> bool:
        obj = self._hpa(t)
        if obj is None:
            return False
        current, high = obj["spec"]["minReplicas"], obj["spec"]["maxReplicas"]
        choices = [v for v in range(1, min(high, 4) + 1) if v != current]
        if not choices:
            return False
        t.base = self.rng.choice(choices)
        obj["spec"]["minReplicas"] = t.base
        self.server.put_object(obj)
        return True

    def _user_lowers_max(self, t: _TargetState) -> bool:
        """The API refuses maxReplicas < minReplicas, so a user who lowers the maximum under
        our raised minimum must lower both in one edit: their minimum is the new base."""
        obj = self._hpa(t)
        if obj is None or obj["spec"]["minReplicas"] < 2:
            return False
        current = obj["spec"]["minReplicas"]
        high = self.rng.randint(1, current - 1)
        choices = [v for v in range(1, high + 1) if v != current]
        t.base = self.rng.choice(choices)
        t.max_replicas = high
        obj["spec"]["minReplicas"], obj["spec"]["maxReplicas"] = t.base, high
        self.server.put_object(obj)
        return True

    # ------------------------------------------------------------------ restarts

    async def _kill_mid_cycle(self) -> None:
        """kill -9: the round's cycles are cancelled at a random point, nothing is closed, and
        a fresh controller (new identity, no memory) takes over from the HPAs' annotations."""
        assert self.controller is not None
        task = asyncio.create_task(self.controller.run_due())
        for _ in range(self.rng.randint(0, 60)):
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._replace_controller(graceful=False)

    async def _replace_controller(self, *, graceful: bool) -> None:
        old = self.controller
        assert old is not None
        await self.feed.stop()
        if graceful:  # a rolling update: the lease is given up, so the new pod leads at once
            if old.elector is not None:
                with contextlib.suppress(Exception):
                    await old.elector.release(old.clock())
            await old.aclose()
        self._retire(old)
        self.report.restarts += 1
        await self._start_controller()
        with contextlib.suppress(Exception):
            await self.controller.renew_leadership()

    async def _restart_mid_hold(self) -> bool:
        """Restart the controller while a target holds on bad data (its fault made to outlast
        the hold, so its end is seen by the new process); False when no target holds."""
        now = self.clock()
        holding = [
            t
            for t in self.targets
            if t.managed
            and t.bad_since is not None
            and (now - t.bad_since).total_seconds() < self.s.hold_seconds
            and self._bad_fault(t)
        ]
        if not holding:
            return False
        t = self.rng.choice(holding)
        rounds = math.ceil(self.s.hold_seconds / self.s.interval_seconds) + 2
        source, _ = self._usage_fault(t)
        if source == "prom":
            t.prom_fault_rounds = max(t.prom_fault_rounds, rounds)
        elif source == "query":
            t.query_fault_rounds = max(t.query_fault_rounds, rounds)
        else:
            self.outage_rounds = max(self.outage_rounds, rounds)
        await self._replace_controller(graceful=self.rng.random() < 0.5)
        return True

    async def _start_standby(self) -> None:
        """A second replica with a skewed clock (5-25 s either way) follows for a few rounds
        (warm data and fits, no writes); then the leader dies without giving up its lease, and
        the standby takes over once it has seen the lease unchanged for a lease duration on
        its own clock."""
        skew = self.rng.choice((-1, 1)) * self.rng.uniform(5.0, 25.0)
        self.standby = self._make_controller(skew)
        self.standby_feed = ConfigMapFeed(self.server)
        self._repair_config_map()  # a process joins the election only once it has a config
        if not await self.standby_feed.follow(self.standby):
            self._violation("the standby's ConfigMap watch never delivered the config")
        self.standby_rounds = self.rng.randint(1, 3)

    async def _standby_round(self) -> None:
        standby = self.standby
        if standby is None:
            return
        leader_alive = self.controller is not None and self.controller.may_patch()
        with contextlib.suppress(Exception):
            if await standby.renew_leadership() and leader_alive:
                self._violation("the standby took the lease from a live leader")
        try:
            await standby.run_due()  # a follower: decides, never writes
        except Exception as error:
            self.report.loop_crashes += 1
            self._violation(f"the standby's run_due raised {error!r}")
        self.standby_rounds -= 1
        if self.standby_rounds > 0:
            return
        # The leader dies (kill -9: no release); the standby becomes the soak's controller.
        old = self.controller
        assert old is not None and self.standby_feed is not None
        await self.feed.stop()
        self._retire(old)
        self.controller, self.feed = standby, self.standby_feed
        self.standby, self.standby_feed = None, None
        self.report.failovers += 1
        self.failover_pending = True

    def _check_failover(self, reports: dict[str, CycleReport]) -> None:
        """Invariant 9: the first round the new leader may patch, it decides every target."""
        if not self.failover_pending or self.controller is None:
            return
        if not self.controller.may_patch():
            return  # the intruder holds the lease; the standby waits its turn
        self.failover_pending = False
        missing = [
            t.namespace
            for t in self.targets
            if t.managed and self._hpa(t) is not None and t.namespace not in reports
        ]
        if missing:
            self._violation(f"the new leader did not decide {missing} in its first cycle")

    # ------------------------------------------------------------------ invariants

    def _check(
        self,
        before: dict[int, dict[str, Any] | None],
        reports: dict[str, CycleReport],
        mark: int,
    ) -> None:
        r = self.report
        now = self.clock()
        patched: Counter[str] = Counter(
            req.path
            for req in self.server.requests[mark:]
            if req.method == "PATCH"
            and "horizontalpodautoscalers" in req.path
            and req.status == 200
        )
        r.patches += sum(patched.values())
        for path, count in patched.items():
            if count > 1:
                r.violations.append(f"round {r.rounds}: {count} patches of {path}")
        for t in self.targets:
            obj, old = self._hpa(t), before[t.index]
            where = f"round {r.rounds} {t.namespace}"
            if obj is None:
                continue
            low, high = obj["spec"]["minReplicas"], obj["spec"]["maxReplicas"]
            if not min(t.base, high) <= low <= high:
                r.violations.append(f"{where}: base={t.base} min={low} max={high}")
            report = reports.get(t.namespace)
            if report is None or not t.managed:
                continue
            r.cycles += 1
            if report.error is not None:
                continue  # the HPA could not be read: nothing decided
            bad = self._bad_fault(t) or not any(s.data_ok for s in report.signals)
            if not bad:
                t.bad_since, t.hold_slack = None, 0.0
                if any(s.partial for s in report.signals) or self._faulted(t):
                    r.partial_cycles += 1
                continue
            r.bad_data_cycles += 1
            t.bad_since = t.bad_since or now
            t.hold_slack = max(t.hold_slack, abs(self.leader_skew))
            if old is None or old["metadata"]["uid"] != obj["metadata"]["uid"]:
                continue  # a new object this round: nothing to compare with
            was = old["spec"]["minReplicas"]
            if low > max(was, min(t.base, high)):
                r.violations.append(f"{where}: raised {was} -> {low} on bad data")
            held = (now - t.bad_since).total_seconds()
            if low < min(was, high) and held < self.s.hold_seconds - t.hold_slack:
                r.violations.append(f"{where}: lowered {was} -> {low} on bad data after {held}s")

    def _take_twins(self) -> dict[int, Twin]:
        """Copies of the reconcilers whose cycle this round the twin will recompute: every
        target with a failed or partial query that may still raise, a sample of the rest."""
        assert self.controller is not None
        twins: dict[int, Twin] = {}
        for t in self.targets:
            reconciler = self.controller.reconcilers.get((t.namespace, HPA))
            if reconciler is None or not t.managed:
                continue
            usable = self._faulted(t) and not self._bad_fault(t)
            if usable or self.twin_rng.random() < self.s.twin_sample:
                twins[t.index] = Twin(reconciler, self.complete_source)
        return twins

    async def _check_twins(self, twins: dict[int, Twin], reports: dict[str, CycleReport]) -> None:
        """Invariant 6, and the twin's fidelity on clean cycles."""
        assert self.controller is not None
        r = self.report
        for index, twin in twins.items():
            t = self.targets[index]
            report = reports.get(t.namespace)
            reads = self.hooked.reads.get(t.namespace, [])
            if (
                report is None
                or report.error is not None
                or report.owner is not None
                or report.recommended is None
                or report.min_replicas_before is None
                or len(reads) != 1  # re-read after a 409: another state than the copy's
                or self.controller.reconcilers.get((t.namespace, HPA)) is not twin.real
            ):
                continue
            complete = await twin.decide(reads[0], report.at)
            if complete.recommended is None:
                continue
            where = f"round {r.rounds} {t.namespace}"
            faulted = self._faulted(t) or any(s.problem or s.partial for s in report.signals)
            if faulted:
                r.twin_checks += 1
                before = report.min_replicas_before
                if report.recommended > before:
                    r.twin_raises += 1
                    if report.recommended > complete.recommended:
                        r.twin_raises_above += 1
                        r.violations.append(
                            f"{where}: raised {before} -> {report.recommended} on a failed or "
                            f"partial query ({_problems(report)}); the complete data gives "
                            f"{complete.recommended} ({_problems(complete)})"
                        )
            elif all(s.data_ok and not s.partial for s in complete.signals):
                r.twin_fidelity += 1
                if complete.recommended != report.recommended:
                    r.violations.append(
                        f"{where}: the twin decided {complete.recommended} on the same complete "
                        f"data where the cycle decided {report.recommended}"
                    )

    def _check_fits(self) -> None:
        """Invariant 7."""
        outcomes = self.fits.outcomes
        for round_, error in outcomes.unexplained:
            self.report.violations.append(f"round {round_}: a fit failed on the pool ({error})")
        outcomes.unexplained.clear()
        problem = self.fits.problem()
        if problem is not None:
            self._violation(f"the fit pool is unusable: {problem}")

    async def _final_restore(self) -> None:
        """Every target removed, faults cleared: every base comes back within a few rounds."""
        assert self.controller is not None
        if self.standby is not None:  # the standby stops; the leader stays
            assert self.standby_feed is not None
            await self.standby_feed.stop()
            await self.standby.aclose()
            self._retire(self.standby)
            self.standby, self.standby_feed = None, None
        self.prom.clear()
        self.outage = None
        for t in self.targets:
            t.prom_fault, t.query_fault, t.managed = None, None, False
            if self._hpa(t) is None:
                self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))
        self.server._faults.clear()
        if self.intruder.is_leader:
            await self.intruder.release(self.clock())
        self.intruder_rounds = 0
        await self._write_good_config("final restore")
        for _ in range(self.s.restore_rounds):
            if not self.controller.pending_restores:
                break
            self.clock.advance(self.s.interval_seconds)
            await self.controller.renew_leadership()
            mark = len(self.server.requests)
            await self.controller.run_due()
            self._check({t.index: self._hpa(t) for t in self.targets}, {}, mark)
        for t in self.targets:
            obj = self._hpa(t)
            assert obj is not None
            notes = obj["metadata"].get("annotations") or {}
            ours = set(MANAGED_ANNOTATIONS) & set(notes)
            if obj["spec"]["minReplicas"] == t.base and not ours:
                self.report.restored += 1
            elif ours or obj["spec"]["minReplicas"] != t.base:
                self.report.violations.append(
                    f"end {t.namespace}: min={obj['spec']['minReplicas']} base={t.base} "
                    f"annotations={sorted(ours)} (base={notes.get(ANNOTATION_BASE_MIN_REPLICAS)}"
                    f" applied={notes.get(ANNOTATION_APPLIED_MIN_REPLICAS)})"
                )


def _problems(report: CycleReport) -> str:
    parts = [
        f"{s.name}: {s.problem or s.partial or 'ok'} needed={s.needed}" for s in report.signals
    ]
    return "; ".join(parts)


_BAD_CONFIGS = (
    "targets: [\n  - hpa: {namespace: t00\n",
    "defaults: {scaleUpStep: four}\ntargets: []\n",
    "defaults: {scaleDownStep: -1}\ntargets: []\n",
    "defaults: {scaleUpStpe: 2}\ntargets: []\n",
    "defaults: {history: 100000d}\ntargets: []\n",
    "targets:\n  - hpa: {namespace: t00, name: nim}\n  - hpa: {namespace: t00, name: nim}\n",
    "defaults: !!python/object/apply:os.system ['true']\n",
    "",
)

_UNAPPLIABLE_CONFIGS = (
    # Validated, then failed while being applied (issue 10): a CA bundle with verification
    # off. No config found today validates and then fails to apply, so each of these must
    # now be a rejected reload.
    "prometheus: {url: 'https://prometheus.invalid', caBundle: /etc/ssl/ca.pem, "
    "verifyTls: false}\ntargets: []\n",
    "prometheus: {url: 'https://prometheus.invalid', caBundle: /nonexistent/ca.pem, "
    "verifyTls: false}\ntargets:\n  - hpa: {namespace: t00, name: nim}\n",
)


async def run_soak(settings: SoakSettings) -> SoakReport:
    return await Soak(settings).run()
