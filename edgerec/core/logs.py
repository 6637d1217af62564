"""Structured logs: one JSON object per line (what a log pipeline or SIEM ingests), or plain text for a terminal.

Everything that logs goes through the one handler of the root logger: edgerec's own loggers, uvicorn's (whose
default configuration would give it text handlers of its own), and Python warnings (numpy's RuntimeWarning, a
DeprecationWarning, ...), which `logging.captureWarnings` turns into records of the logger `py.warnings` instead of
two raw lines of text on stderr."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import time
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn's loggers (uvicorn.access is switched off by the services): no handlers of their own, the root's.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


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


def stderr_handler(text: bool = False) -> logging.Handler:
    """The root logger's handler (a logging.config factory): stderr, JSON or text. Whichever process sets it up,
    uvicorn's worker processes included, also has Python warnings logged through it from then on."""
    logging.captureWarnings(True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT) if text else JsonFormatter())
    return handler


def logging_config() -> dict[str, Any]:
    """EDGEREC_LOG_LEVEL (default INFO) and EDGEREC_LOG_FORMAT (json, the default, or text), as a logging.config
    dictionary: what configure_logging applies, and what a service hands uvicorn as its `log_config`, which uvicorn
    applies again in its own process and in each worker process it spawns."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "stderr": {
                "()": "edgerec.core.logs.stderr_handler",
                "text": os.environ.get("EDGEREC_LOG_FORMAT", "json").lower() == "text",
            }
        },
        "root": {"handlers": ["stderr"], "level": os.environ.get("EDGEREC_LOG_LEVEL", "INFO").upper()},
        "loggers": {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
    }


def configure_logging() -> None:
    logging.config.dictConfig(logging_config())
