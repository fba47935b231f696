"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import time

__all__ = ["QUIET_LOGGERS", "JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """`{"t", "level", "logger", "msg", "exc"?}` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# HTTP client libraries log every request at INFO; a benchmark or a parity run
# makes thousands, which would bury the figures it prints. Their warnings stay.
QUIET_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
