"""Signal presets: the queries of NIM for LLMs and vLLM, and the names an HPA may give their
KV-cache gauge."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

MATCHERS_PLACEHOLDER: Final = "${matchers}"
"""The one placeholder a query may contain; replaced by the target's label matchers."""

SIGNAL_PRESETS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "nim": MappingProxyType(
            {
                "query": "sum(gpu_cache_usage_perc{${matchers}})",
                "queueQuery": "sum(num_requests_waiting{${matchers}})",
                "runningQuery": "sum(num_requests_running{${matchers}})",
                "hpaMetric": "gpu_cache_usage_perc",
            }
        ),
        # vLLM renamed its KV-cache gauge (gpu_ -> kv_cache_usage_perc); one `or` reads
        # either, and a pod exporting both counts once (`or` matches on labels, not names).
        "vllm": MappingProxyType(
            {
                "query": "sum(vllm:gpu_cache_usage_perc{${matchers}}"
                " or vllm:kv_cache_usage_perc{${matchers}})",
                "queueQuery": "sum(vllm:num_requests_waiting{${matchers}})",
                "runningQuery": "sum(vllm:num_requests_running{${matchers}})",
                "hpaMetric": "vllm_kv_cache_usage_perc",
            }
        ),
    }
)
"""Signal presets (YAML keys): a signal with ``preset: nim`` gets these, explicit keys win."""

_VLLM_KV_CACHE_NAMES: Final = (
    "vllm_kv_cache_usage_perc",  # deploy/prometheus-adapter's vLLM rule
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
)
HPA_METRIC_ALIASES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: _VLLM_KV_CACHE_NAMES for name in _VLLM_KV_CACHE_NAMES}
)
"""Names an HPA may give the same per-pod metric: an ``hpaMetric`` of one of them finds the
HPA's target under any (vLLM's two gauge names, and the adapter rule's name for both)."""

_DEFAULT_SIGNAL_NAME: Final = "kv_cache"
_DEFAULT_PRESET: Final = "nim"
