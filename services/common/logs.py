"""JSON structured logs, one object per line, with secrets scrubbed.

Fields passed with ``extra={...}`` (video_id, scene, provider, attempt, ms, ...) become
top-level keys. Any value registered with :func:`register_secret` is replaced by
``[redacted]`` wherever it appears in a record, so a key can never reach a log line even
through an exception message from a client library.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never let this value appear in a log line (ignored when empty or too short to matter)."""
    if value and len(value) >= 6:
        _secrets.add(value)


# A JWT (a user's access token) or an access_token parameter, wherever it appears.
_TOKENS = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(access_token=)[^&\s\"']+")


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    if "eyJ" in text or "access_token=" in text:
        text = _TOKENS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request lines at INFO; ours are enough.
    for noisy in ("httpx", "httpx2", "openai", "hpack", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
