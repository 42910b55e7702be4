"""JSON log lines that say which return they are about.

A context variable holds the fields of the work in hand (merchant, Loop return id, task, event
id); every line logged while they are bound carries them, so one filter on `loop_return_id`
shows a return's whole story across the web and worker processes. Only ids and outcomes go in
here: never a shopper's email, name or address, never a key or secret.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

# The default is read-only: bind() always sets a new dict, so nothing may mutate the shared one.
_fields: ContextVar[Mapping[str, Any]] = ContextVar("log_fields", default=MappingProxyType({}))

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def bind(**fields) -> Token:
    """Add fields to every line logged from here on (in this thread or task); None is skipped."""
    return _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: Token) -> None:
    _fields.reset(token)


@contextmanager
def bound(**fields) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal (`make up`): the classic line, then the bound fields."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields.get()
        return f"{line} [{' '.join(f'{k}={v}' for k, v in fields.items())}]" if fields else line


def configure(level: int | str | None = None) -> None:
    """One stderr handler on the root logger: JSON unless LOG_FORMAT=text (for humans)."""
    handler = logging.StreamHandler(sys.stderr)
    text = os.environ.get("LOG_FORMAT", "json").lower() == "text"
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO").upper())
