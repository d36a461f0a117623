"""The chaos soak: many targets, many cycles, random faults from a seeded RNG, and the
invariants checked after every cycle.

What is real and what is fake:

- Kubernetes: the in-process API double (resource versions, 409s, validation, RBAC-free),
  reached over HTTP by the real ``kubernetes_asyncio`` client inside the real ``KubeClient``;
  faults through ``fail_next`` and direct store edits, mid-cycle ones through ``HookedKube``.
- Prometheus: ``PrometheusFaultProxy`` in standalone mode, a fake that speaks the real HTTP
  API (``/api/v1/query_range`` JSON) from a deterministic demand function, so the real
  ``PrometheusSource`` adapter (requests, parsing, timeouts) is in the loop. It is not the
  real Prometheus server (the fault tests use that one); a backfilled TSDB cannot follow a
  fake clock through hours of simulated time cheaply.
- The controller: the real ``Controller`` (config reload, leader election, concurrent cycles,
  restores), stepped with a fake clock, one round = every due target cycles once.

Invariants checked after every round, per target (a violation is recorded, never raised):

1. ``min(base, maxReplicas) <= minReplicas <= maxReplicas``, where ``base`` is the user's own
   value as the harness knows it (initial, hand edits, recreated objects);
2. no raise from bad data: with all data bad, minReplicas never goes above what it was or the
   base, whichever is higher;
3. no lowering while data is bad and younger than ``missingDataHold``;
4. at most one successful patch per HPA per round;
5. no exception out of ``run_due`` (a loop crash) and no ``cycle_failed`` (an internal error);
6. at the end every target is removed from the configuration: every HPA gets its base back and
   loses our annotations.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from predictive_scaler.config import parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    HpaSnapshot,
    KubeClient,
)
from predictive_scaler.leader import LeaderElector
from predictive_scaler.reconcile import MANAGED_ANNOTATIONS, CycleReport
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_api_client, make_hpa

from .kube_hooks import HookedKube
from .prom_proxy import BAD_DATA_FAULTS, PROMETHEUS_FAULTS, PrometheusFaultProxy

DATA_FAULTS = ("empty", "nan", "inf", "partial", "stale")
HPA = "nim"
LEASE_NS = "ops"
LEASE = "predictive-scaler"
PODS = 3
TARGET_PER_POD = 0.7

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
    outage_rate: float = 0.03
    """Chance per round that a Prometheus outage starts (1-6 rounds, every target)."""
    kube_fault_rate: float = 0.25
    """Chance per round of one Kubernetes / process fault."""
    slow_share: float = 0.05
    """Share of outages that are ``slow`` (each round of it costs ~1.5 s of real time)."""
    hold_seconds: float = 300.0
    restore_rounds: int = 10


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
    restored: int = 0
    bad_data_cycles: int = 0
    held_cycles: int = 0
    seconds: float = 0.0
    log_counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.loop_crashes and not self.internal_errors

    def render(self) -> str:
        s = self.settings
        lines = [
            f"chaos soak: seed={s.seed} targets={s.targets} rounds={self.rounds} "
            f"interval={s.interval_seconds:g}s",
            f"cycles (target x round, completed): {self.cycles}",
            f"faults injected: {sum(self.faults.values())}",
        ]
        for kind in (*PROMETHEUS_FAULTS, *KUBE_FAULTS, "target_readded"):
            lines.append(f"  {kind:<26} {self.faults.get(kind, 0)}")
        lines += [
            f"cycles on bad data: {self.bad_data_cycles} (held or decayed, never raised)",
            f"successful patches: {self.patches}, events: {self.events}",
            f"controller restarts (kill -9): {self.restarts}",
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


def _namespace(i: int) -> str:
    return f"t{i:02d}"


def _demand_fn(targets: int, seed: int) -> Any:
    """Per namespace: a daily-ish wave between ~0.5 and ~5 pods' worth, plus a deterministic
    wiggle, split over ``PODS`` pods. A pure function of (namespace, t)."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, targets)
    periods = rng.uniform(2, 8, targets) * 3600
    peaks = rng.uniform(1.0, 4.5, targets)

    def series(namespace: str, ts: npt.NDArray[np.float64]) -> list[tuple[dict[str, str], Any]]:
        if not namespace.startswith("t") or not namespace[1:].isdigit():
            return []
        i = int(namespace[1:])
        if i >= targets:
            return []
        wave = 0.5 + peaks[i] * (1 + np.sin(2 * math.pi * ts / periods[i] + phases[i])) / 2
        wiggle = 0.05 * np.sin(ts / 97.0 + i)
        per_pod = np.round((wave + wiggle) / PODS, 5)
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
            "        query: 'sum(gpu_cache_usage_perc{${matchers}})'",
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
    bad_since: datetime | None = None
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


# ---------------------------------------------------------------------------- the soak


class Soak:
    def __init__(self, settings: SoakSettings) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
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

    # ------------------------------------------------------------------ setup

    async def run(self) -> SoakReport:
        started = time.perf_counter()
        with _counting_logs() as logs:
            self.server = KubeDouble()
            await self.server.start()
            self.api = make_api_client(self.server.url, self.server.token)
            self.kube = KubeClient(self.api, reporting_instance="soak")
            self.prom = PrometheusFaultProxy(series=_demand_fn(self.s.targets, self.s.seed))
            await self.prom.start()
            self.intruder = LeaderElector(self.kube, LEASE_NS, LEASE, "intruder", clock=self.clock)
            self.intruder_rounds = 0
            try:
                for t in self.targets:
                    self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))
                self.controller = self._new_controller()
                for _ in range(self.s.rounds):
                    await self._round()
                await self._final_restore()
            finally:
                await self.controller.aclose()
                await self.prom.close()
                await self.api.close()
                await self.server.close()
        self.report.log_counts = logs.counts
        self.report.internal_errors = self.internal_from_dead + self._internal_errors(
            self.controller
        )
        self.report.violations += [f"logged {f}" for f in logs.failures]
        self.report.events = len(self.server.list_events())
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _internal_errors(self, controller: Controller) -> int:
        """``cycle_failed`` as counted by the controller's own metric (its module logger
        is bound at import, out of reach of the soak's log counter)."""
        total = 0.0
        for metric in controller.metrics.cycle_errors.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("kind") == "internal":
                    total += sample.value
        return int(total)

    def _new_controller(self) -> Controller:
        if self.generation:
            self.internal_from_dead += self._internal_errors(self.controller)
        self.generation += 1
        self.hooked = HookedKube(self.kube)
        elector = LeaderElector(
            self.kube, LEASE_NS, LEASE, f"controller-{self.generation}", clock=self.clock
        )
        controller = Controller(
            self.hooked,  # type: ignore[arg-type]
            prometheus_url=self.prom.url,
            clock=self.clock,
            elector=elector,
            fit_runner=_inline_fit,
        )
        controller.apply_config(parse_config(self._config_text()))
        return controller

    def _config_text(self) -> str:
        enabled = {t.index for t in self.targets if t.managed}
        return _config(self.s, enabled, "http://prometheus.invalid:9090")

    def _hpa(self, t: _TargetState) -> dict[str, Any] | None:
        return self.server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, HPA)

    def _hpa_path(self, t: _TargetState) -> str:
        return f"/namespaces/{t.namespace}/horizontalpodautoscalers/{HPA}$"

    # ------------------------------------------------------------------ one round

    async def _round(self) -> None:
        self.clock.advance(self.s.interval_seconds)
        self.report.rounds += 1
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
            self.report.violations.append(f"round {self.report.rounds}: run_due raised {error!r}")
        self._check(before, reports, mark)

    def _prometheus_faults(self) -> None:
        """Data faults per target (its series empty, NaN, +Inf, partial or stale) and, less
        often, outages of the whole server (down, slow, 5xx, rejected query, not JSON), which
        fail every target's query alike (batched or not)."""
        if self.outage is not None:
            self.outage_rounds -= 1
            if self.outage_rounds <= 0:
                self.outage = None
                self.prom.set_fault(None)
        if self.outage is None and self.rng.random() < self.s.outage_rate:
            slow = self.rng.random() < self.s.slow_share
            kind = "slow" if slow else self.rng.choice(["down", "5xx", "bad_query", "bad_json"])
            self.outage, self.outage_rounds = kind, self.rng.randint(1, 6)
            self.prom.set_fault(kind, **({"slow_seconds": 1.5} if slow else {}))
            self.report.faults[kind] += 1
        for t in self.targets:
            if t.prom_fault is not None:
                t.prom_fault_rounds -= 1
                if t.prom_fault_rounds <= 0:
                    t.prom_fault = None
                    self.prom.set_fault(None, t.namespace)
            if t.prom_fault is None and self.rng.random() < self.s.prometheus_fault_rate:
                kind = self.rng.choice(DATA_FAULTS)
                t.prom_fault, t.prom_fault_rounds = kind, self.rng.randint(1, 10)
                self.prom.set_fault(kind, t.namespace)
                self.report.faults[kind] += 1

    def _bad_fault(self, t: _TargetState) -> bool:
        kind = self.prom.faults.get(t.namespace) or self.prom.faults.get(None)
        return kind is not None and kind.kind in BAD_DATA_FAULTS

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
        kind = self.rng.choice(KUBE_FAULTS)
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
                return False
            server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, HPA)
            t.deleted_rounds = self.rng.randint(1, 5)
        elif kind == "max_lowered_below_min":
            if not self._user_lowers_max(t):
                return False
        elif kind == "user_edit_min":
            if not self._user_edits_min(t):
                return False
        elif kind == "lease_lost_mid_patch":
            self.hooked.before_patch(self._lose_lease)
        elif kind == "kill_9_mid_cycle":
            self.report.faults[kind] += 1
            return True
        elif kind == "bad_config":
            text = self.rng.choice(_BAD_CONFIGS)
            await self.controller.load_config_text(text)
        elif kind == "target_removed":
            t.managed = not t.managed
            self.controller.apply_config(parse_config(self._config_text()))
            if t.managed:
                kind = "target_readded"
        self.report.faults[kind] += 1
        return False

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

    async def _kill_mid_cycle(self) -> None:
        """kill -9: the round's cycles are cancelled at a random point, nothing is closed, and
        a fresh controller (new identity, no memory) takes over from the HPAs' annotations."""
        task = asyncio.create_task(self.controller.run_due())
        for _ in range(self.rng.randint(0, 60)):
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.report.restarts += 1
        self.controller = self._new_controller()

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
                t.bad_since = None
                continue
            r.bad_data_cycles += 1
            t.bad_since = t.bad_since or now
            if old is None or old["metadata"]["uid"] != obj["metadata"]["uid"]:
                continue  # a new object this round: nothing to compare with
            was = old["spec"]["minReplicas"]
            if low > max(was, min(t.base, high)):
                r.violations.append(f"{where}: raised {was} -> {low} on bad data")
            held = (now - t.bad_since).total_seconds()
            if low < min(was, high) and held < self.s.hold_seconds:
                r.violations.append(f"{where}: lowered {was} -> {low} on bad data after {held}s")

    async def _final_restore(self) -> None:
        """Every target removed, faults cleared: every base comes back within a few rounds."""
        self.prom.clear()
        for t in self.targets:
            t.prom_fault, t.managed = None, False
            if self._hpa(t) is None:
                self.server.put_object(make_hpa(t.namespace, HPA, t.base, t.max_replicas))
        self.server._faults.clear()
        if self.intruder.is_leader:
            await self.intruder.release(self.clock())
        self.intruder_rounds = 0
        self.controller.apply_config(parse_config(self._config_text()))
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


async def run_soak(settings: SoakSettings) -> SoakReport:
    return await Soak(settings).run()
