"""Log lines an operator can grep, like Postfix's: `QUEUEID: key=value, key=value`.

Services call `emit(logger, queue_id, **fields)`; the text formatter prints the line, the JSON
formatter (runtime) prints the same fields as an object. Never pass passwords or message bodies.
"""

from __future__ import annotations

import logging


def _fmt(value: object) -> str:
    text = str(value)
    if any(c in text for c in " ,=\"") or text == "":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def emit(logger: logging.Logger, prefix: str, level: int = logging.INFO, **fields: object) -> None:
    if not logger.isEnabledFor(level):
        return
    body = ", ".join(f"{k.rstrip('_')}={_fmt(v)}" for k, v in fields.items() if v is not None)
    logger.log(level, "%s: %s", prefix, body, extra={"fields": {"id": prefix, **fields}})
