"""Where the configuration is found and how Prometheus is reached, from the command line.

Shared by ``run`` (:mod:`predictive_scaler.runtime`) and ``recommend``, so a one-shot command
does not import the live controller for three small helpers.
"""

from __future__ import annotations

from typing import Final

from predictive_scaler.config import PrometheusConfig
from predictive_scaler.prometheus import PrometheusSettings

__all__ = ["CONFIG_KEY", "parse_config_map_ref", "prometheus_settings"]

CONFIG_KEY: Final = "config.yaml"
"""The key of the ConfigMap that holds the configuration."""


def parse_config_map_ref(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); ValueError otherwise."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def prometheus_settings(
    config: PrometheusConfig | None, url_override: str | None
) -> PrometheusSettings | None:
    """Adapter settings from the config's ``prometheus:`` section, ``--prometheus-url`` winning;
    ``None`` when neither gives a URL."""
    if config is None:
        if url_override is None:
            return None
        return PrometheusSettings(url=url_override)
    auth = config.basic_auth
    return PrometheusSettings(
        url=url_override or config.url,
        timeout_seconds=config.timeout_seconds,
        bearer_token_file=config.bearer_token_file,
        basic_auth_username=auth.username if auth else None,
        basic_auth_password_file=auth.password_file if auth else None,
        ca_bundle=config.ca_bundle,
        verify_tls=config.verify_tls,
        headers=dict(config.headers),
    )
