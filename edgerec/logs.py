"""Structured logs: one JSON object per line (what a log pipeline or SIEM ingests), or plain text for a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Fields: ts, level, logger, msg, and whatever `extra=` carried (request_id, data_version, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging() -> None:
    """EDGEREC_LOG_LEVEL (default INFO) and EDGEREC_LOG_FORMAT (json, the default, or text)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("EDGEREC_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("EDGEREC_LOG_LEVEL", "INFO").upper())
