"""Logging set-up, with a last line of defence that masks secrets in every record.

The code never logs a key on purpose; the filter is there for the day a library does (an
exception text that echoes a header, say). Secrets are registered as they are loaded.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

MASK = "***"
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    if len(value) >= 6:
        _SECRETS.add(value)


def mask(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, MASK)
    return text


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = mask(record.getMessage())
            record.args = None
            if record.exc_text:
                record.exc_text = mask(record.exc_text)
        return True


class MaskingFormatter(logging.Formatter):
    """Tracebacks are formatted after filters run, so they are masked here too."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging(level: str) -> None:
    """Records go through a queue to a writer thread: a slow or blocked stderr (a full pipe, a
    stalled log shipper) must never stall the event loop that polls and serves."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretFilter())
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
