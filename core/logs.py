"""Request-scoped logs: every line a request causes carries its id, on every hop.

A request's id is chosen once (the client's, or one the router's ingress generates) and travels
with the request: in `GenerationRequest` to the drafter, in the session's opening message to the
verifier. Each hop enters `request_scope(id)` where it starts work for that request; every log
record made inside the scope, on that thread or task, gets `record.request_id` (records made
outside a scope get "-"). Context variables follow asyncio tasks but not threads, so a thread
that works for a request (the drafter's worker) enters the scope itself.

`configure_logging(settings, component, replica)` installs one handler on the project's loggers
in a process (a Serve replica, the `specroute serve` driver): text lines
(`time level component request_id logger: message`) or JSON lines (one object per line with the
same fields plus pid and replica), written to stderr or, with `settings.dir`, to
`DIR/<component>-<pid>.log`. To follow one request, grep its id in those files.

This module knows nothing about gRPC, Ray or what a request does.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NO_REQUEST = "-"
PROJECT_LOGGERS = ("specroute", "router", "drafter_service", "verifier_service", "core")

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("specroute_request_id", default=NO_REQUEST)


class LogSettings(BaseModel):
    """How a process of the system writes its logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["text", "json"] = Field("text", description="Plain text lines or one JSON object per line.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level written.")
    dir: str | None = Field(None, description="Write DIR/<component>-<pid>.log instead of stderr.")


def current_request_id() -> str:
    """The id of the request this code runs for, or "-" outside any request."""
    return _REQUEST_ID.get()


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Log records made inside carry `request_id` (on this thread or asyncio task)."""
    token = _REQUEST_ID.set(request_id or NO_REQUEST)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id and the process's component and replica."""

    def __init__(self, component: str = "", replica: str = ""):
        super().__init__()
        self.component, self.replica = component, replica

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        record.component = self.component
        record.replica = self.replica
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, component, replica, pid,
    request_id, logger, message, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "component": getattr(record, "component", ""),
               "replica": getattr(record, "replica", ""), "pid": record.process,
               "request_id": getattr(record, "request_id", NO_REQUEST), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(component)s %(request_id)s %(name)s: %(message)s"


def configure_logging(settings: LogSettings, component: str, replica: str = "") -> logging.Handler:
    """Routes the project's loggers in this process to one handler in the chosen format (replacing
    a handler this function installed before); returns the handler."""
    if settings.dir:
        Path(settings.dir).mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(Path(settings.dir) / f"{component}-{os.getpid()}.log",
                                                       encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter(component, replica))
    handler.set_name("specroute")
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "specroute"]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.setLevel(settings.level)
        logger.propagate = False  # one line per record, not one more from a root handler
    return handler
