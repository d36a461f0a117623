"""The validated configuration's values: signals, targets, Prometheus, the controller, the whole.

A target's policy (:class:`~predictive_scaler.config.policy.Policy`) lives with its field table
in ``policy``. Plain frozen dataclasses: no validation here (``loader`` builds them only from
checked values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from predictive_scaler.config.policy import Policy
from predictive_scaler.config.presets import _DEFAULT_PRESET, _DEFAULT_SIGNAL_NAME, SIGNAL_PRESETS
from predictive_scaler.signals import DEFAULT_KIND


@dataclass(frozen=True)
class Signal:
    """One demand signal of a target. Queries may contain ``${matchers}``."""

    name: str
    """Id, unique within the target (``[a-z0-9_]+``)."""

    query: str | None
    """PromQL for the demand, summed over the target's pods; ``None`` only for a kind that
    does not read it."""

    queue_query: str | None = None
    """PromQL for waiting requests; ``None`` disables saturation correction."""

    running_query: str | None = None
    """PromQL for running requests; set whenever ``queue_query`` is."""

    target_per_pod: float | None = None
    """Demand per pod; ``None`` means read the HPA's target for ``hpa_metric``."""

    hpa_metric: str | None = None
    """HPA metric whose target is used when ``target_per_pod`` is ``None``."""

    kind: str = DEFAULT_KIND
    """Which kind of signal (:data:`predictive_scaler.signals.SIGNAL_KINDS`): the queries it
    reads and how their answers become demand."""


def _preset_signal(preset: str, name: str = _DEFAULT_SIGNAL_NAME) -> Signal:
    values = SIGNAL_PRESETS[preset]
    return Signal(
        name=name,
        query=values["query"],
        queue_query=values["queueQuery"],
        running_query=values["runningQuery"],
        hpa_metric=values["hpaMetric"],
    )


DEFAULT_SIGNALS: Final[tuple[Signal, ...]] = (_preset_signal(_DEFAULT_PRESET),)
"""Signals of a target that lists none: NIM KV-cache demand."""


@dataclass(frozen=True)
class Target:
    """One managed HPA."""

    id: str
    """Display id, unique across targets (default ``<namespace>/<name>``)."""

    namespace: str
    """Namespace of the HPA."""

    name: str
    """Name of the HPA."""

    enabled: bool = True
    """A disabled target gets its base minReplicas back and is otherwise left alone."""

    selector: tuple[tuple[str, str], ...] = ()
    """Label equality matchers for the target's pods, sorted by label name."""

    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    """Demand signals; the largest replica need counts."""

    policy: Policy = field(default_factory=Policy)
    """Effective policy: the defaults with this target's overrides."""

    @property
    def match_labels(self) -> dict[str, str]:
        """The labels ``${matchers}`` stands for: ``namespace`` first, then the selector.

        Render them with :func:`predictive_scaler.prometheus.render_matchers`, which escapes.
        """
        return {"namespace": self.namespace, **dict(self.selector)}


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication for Prometheus."""

    username: str
    """User name."""

    password_file: str
    """Path of the file holding the password."""


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach Prometheus."""

    url: str
    """Base URL of the HTTP API."""

    timeout_seconds: float = 10.0
    """Timeout of one request."""

    bearer_token_file: str | None = None
    """Path of a file holding a bearer token."""

    basic_auth: BasicAuth | None = None
    """Basic authentication, exclusive with ``bearer_token_file``."""

    ca_bundle: str | None = None
    """Path of a PEM CA bundle."""

    verify_tls: bool = True
    """Verify the server certificate."""

    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Extra HTTP headers (not in ``repr``: values may be tenant ids or keys)."""


@dataclass(frozen=True)
class ControllerConfig:
    """Process settings."""

    metrics_port: int = 8080
    """Port of ``/metrics``."""

    lease_name: str = "predictive-scaler"
    """Name of the leader-election Lease."""

    lease_namespace: str | None = None
    """Namespace of the Lease; ``None`` means the controller's own namespace."""

    lease_duration_seconds: float = 15.0
    """Validity of a Lease without renewal."""

    renew_period_seconds: float = 5.0
    """Renewal (and retry) period, shorter than ``lease_duration_seconds``."""

    hpa_watch: str = "cluster"
    """How HPAs are read: ``cluster``, ``namespaces`` (list + watch) or ``off`` (GETs)."""


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    defaults: Policy = field(default_factory=Policy)
    """Policy of targets that override nothing."""

    targets: tuple[Target, ...] = ()
    """Managed HPAs, in configuration order."""

    prometheus: PrometheusConfig | None = None
    """How to reach Prometheus; ``None`` when the config does not say."""

    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """Process settings."""

    def enabled_targets(self) -> tuple[Target, ...]:
        """The targets with ``enabled: true``, in configuration order."""
        return tuple(target for target in self.targets if target.enabled)
