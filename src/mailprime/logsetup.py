"""Logging set-up: grep-able text lines (default) or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k.rstrip("_"): v for k, v in fields.items() if v is not None})
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "INFO", file: str = "") -> None:
    handler: logging.Handler = (logging.FileHandler(file) if file
                                else logging.StreamHandler(sys.stderr))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(name)s[%(process)d]: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("mailprime")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
