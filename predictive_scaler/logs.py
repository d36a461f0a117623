"""Structured logging: configured once, JSON in-cluster, console on a terminal.

Every line is one event whose name is snake_case past tense (``min_replicas_patched``,
``config_reloaded``, ``metrics_missing``) with key/value fields. A target's cycle binds
``target=<id>`` once, so every line of that cycle carries it. Values under keys that look
like credentials are redacted before rendering, whatever the caller passed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog

__all__ = ["LOG_FORMATS", "LogFormat", "Logger", "configure_logging", "get_logger"]

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: Final[tuple[str, ...]] = ("auto", "json", "console")

Logger = structlog.typing.FilteringBoundLogger

_SECRET_KEY: Final = re.compile(r"(?i)token|password|secret|authorization|cookie|credential")
_REDACTED: Final = "<redacted>"
_state: dict[str, bool] = {"configured": False}


def _redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Never let a credential reach the log, even when a caller binds one by mistake."""
    for key in list(event_dict):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = _REDACTED
    return event_dict


def configure_logging(
    log_format: LogFormat = "auto",
    *,
    stream: TextIO | None = None,
    level: int = logging.INFO,
    force: bool = False,
) -> None:
    """Configure structlog for the process. Later calls are ignored unless ``force``.

    ``auto`` renders JSON unless ``stream`` is a terminal: in a pod stdout is a pipe, and log
    collectors want one JSON object per line; a person at a terminal wants colours.
    """
    if _state["configured"] and not force:
        return
    out = stream if stream is not None else sys.stdout
    use_json = log_format == "json" or (log_format == "auto" and not _is_tty(out))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Tests reconfigure the output stream; a cached logger would keep the old one.
        cache_logger_on_first_use=False,
    )
    _state["configured"] = True


def get_logger(**bound: Any) -> Logger:
    """A logger with ``bound`` fields on every line (e.g. ``target=...``)."""
    logger: Logger = structlog.get_logger("predictive_scaler").bind(**bound)
    return logger


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
