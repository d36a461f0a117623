"""Fault injection for the controller: a Prometheus fault proxy, Kubernetes mid-cycle hooks
and the chaos soak harness (used by ``tests/test_chaos_soak.py`` and ``benchmarks/chaos.py``).
"""

from .kube_hooks import HookedKube
from .prom_proxy import BAD_DATA_FAULTS, PROMETHEUS_FAULTS, PrometheusFaultProxy, PromFault

__all__ = [
    "BAD_DATA_FAULTS",
    "PROMETHEUS_FAULTS",
    "HookedKube",
    "PromFault",
    "PrometheusFaultProxy",
]
