"""Logs: one JSON object per line (CI, production, pipes), or human-readable lines on a terminal.
Either way each line carries the request id of its request.

LOG_FORMAT picks: `json`, `text`, or `auto` (text when stderr is a terminal, JSON otherwise).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from impl.platform.request_context import _request_id

# uvicorn adds `color_message` (its message with ANSI colour codes) to some records: a terminal
# thing, never written to JSON.
_TERMINAL_ONLY = {"color_message"}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_ACCESS = "task_api.access"
_ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "user_id")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _TERMINAL_ONLY
    }


def _trace_id() -> str | None:
    """The trace id of the span being served (32 hex digits, as tracing tools show it), or
    None outside a traced request."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, trace_ids: bool = False) -> None:
        """trace_ids: add the trace id next to the request id (tracing is on)."""
        super().__init__()
        self.trace_ids = trace_ids

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id:
            entry["request_id"] = request_id
        if self.trace_ids:
            trace_id = _trace_id()
            if trace_id:
                entry["trace_id"] = trace_id
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_COLOURS = {"DEBUG": "\x1b[36m", "INFO": "\x1b[32m", "WARNING": "\x1b[33m",
            "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_SHORT_NAMES = {"uvicorn.error": "uvicorn"}  # its start-up and shutdown lines are no errors


def _show(value: Any) -> str:
    """A value for `key=value`: as is when that reads unambiguously, else quoted."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if isinstance(value, str) and (not text or any(c in text for c in ' ="\\') or
                                   not text.isprintable()):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """One line per record for a person at a terminal:

        2026-12-03 10:15:02.123 INFO    GET /api/tasks 200 3.21 ms user=a11ce... request_id=5f0c...
        2026-12-03 10:15:03.456 WARNING task_api.auth: token refused reason="Token expired" ...

    Local time; the access line says method, path, status, duration and user first; other
    records say their logger; extra fields follow as key=value, the request id last. `color`
    adds ANSI colours (terminals only)."""

    def __init__(self, color: bool = False, trace_ids: bool = False) -> None:
        super().__init__()
        self.color = color
        self.trace_ids = trace_ids

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        stamp += f".{int(record.msecs):03d}"
        level = f"{record.levelname:<7}"
        extras = _extras(record)
        if record.name == _ACCESS and all(k in extras for k in _ACCESS_FIELDS):
            fields = {k: extras.pop(k) for k in _ACCESS_FIELDS}
            text = (f"{fields['method']} {fields['path']} {fields['status']} "
                    f"{fields['duration_ms']} ms user={_show(fields['user_id'])}")
        else:
            message = record.getMessage()
            colour_message = getattr(record, "color_message", None)
            if self.color and isinstance(colour_message, str):
                try:
                    message = colour_message % record.args if record.args else colour_message
                except (TypeError, ValueError):
                    pass
            text = f"{_SHORT_NAMES.get(record.name, record.name)}: {message.rstrip()}"
        parts = [f"{k}={_show(v)}" for k, v in extras.items()]
        request_id = _request_id.get()
        if request_id:
            parts.append(f"request_id={request_id}")
        trace_id = _trace_id() if self.trace_ids else None
        if trace_id:
            parts.append(f"trace_id={trace_id}")
        if self.color:
            level = f"{_COLOURS.get(record.levelname, '')}{level}{_RESET}"
            stamp = f"{_DIM}{stamp}{_RESET}"
            if parts:
                parts = [f"{_DIM}{' '.join(parts)}{_RESET}"]
        line = " ".join([stamp, level, text, *parts])
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def use_text(log_format: str, stream: Any = None) -> bool:
    """Whether to write text lines: LOG_FORMAT=text, or auto and the stream (stderr) is a
    terminal."""
    if log_format != "auto":
        return log_format == "text"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def logging_config(level: str, log_format: str = "auto",
                   trace_ids: bool = False) -> dict[str, Any]:
    """A dictConfig for our loggers and uvicorn's, used by the CLI and every uvicorn worker. The
    format is decided here, in the parent: workers inherit its stderr and this dict.
    `trace_ids`: each line of a traced request also carries its trace id (tracing is on)."""
    if use_text(log_format):
        colour = use_text("auto") and "NO_COLOR" not in os.environ  # https://no-color.org
        formatter: dict[str, Any] = {"()": "impl.platform.logs.TextFormatter", "color": colour,
                                     "trace_ids": trace_ids}
    else:
        formatter = {"()": "impl.platform.logs.JsonFormatter", "trace_ids": trace_ids}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default"},
        },
        "loggers": {
            "task_api": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            # Our request-context middleware writes the access line, with the request id.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        # Any other library's warnings, in the same format (not Python's bare last resort).
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
