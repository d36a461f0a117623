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
_HANDLER_NAME: Final = "predictive_scaler"


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
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Tests reconfigure the output stream; a cached logger would keep the old one.
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(out, shared, renderer, level)
    _state["configured"] = True


def reset_logging() -> None:
    """Undo :func:`configure_logging`: structlog's defaults, our ``logging`` handler removed.

    For callers that configured logging onto a stream they then close (tests capturing
    output): later lines must not go to the closed stream."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    _state["configured"] = False


def _route_standard_logging(
    out: TextIO,
    shared: list[structlog.typing.Processor],
    renderer: structlog.typing.Processor,
    level: int,
) -> None:
    """Render the libraries' own ``logging`` records (aiohttp, asyncio, the Kubernetes
    client) in the same format on the same stream, so no line of a run is in another
    format. Warnings and above only: their INFO lines (an access log per scrape) are noise."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    # Never below WARNING (library INFO is noise), and never below what was asked: a CLI that
    # wants errors only (recommend) must not get urllib3's retry warnings as extra lines. On
    # the handler, not only the root: kubernetes_asyncio's Configuration resets urllib3's own
    # logger level to WARNING whenever it is built.
    handler.setLevel(max(logging.WARNING, level))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, level))


def get_logger(**bound: Any) -> Logger:
    """A logger with ``bound`` fields on every line (e.g. ``target=...``).

    Lazy: it takes the configuration in force when it logs, not when it was made, so a
    module-level ``log = get_logger()`` (made at import, before :func:`configure_logging`)
    still writes in the chosen format. ``.bind()`` on it makes a concrete logger, so bind
    only after logging is configured (a target's cycle does)."""
    logger: Logger = structlog.get_logger("predictive_scaler", **bound)
    return logger


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
