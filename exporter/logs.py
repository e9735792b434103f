"""Logging set-up, with a last line of defence that masks secrets in every record.

The code never logs a key on purpose; the filter is there for the day a library does (an
exception text that echoes a header, say). Secrets are registered as they are loaded.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import re
import sys
import threading
import time
from collections.abc import Callable

MASK = "***"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
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


class RepeatFilter(logging.Filter):
    """A warning or error repeated within ``window_seconds`` is logged once, and the next one
    after the window says how many were left out: a store that fails every write for 100
    sources writes one line a minute, not a hundred.

    Records are alike when their ``repeat_key`` (an ``extra`` the caller gives, for messages
    that differ only by source) or else their message is the same, numbers aside: DuckDB words
    one out-of-memory error with the sizes of the moment ("(3.7 MiB/3.8 MiB used)").
    """

    def __init__(
        self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[object, tuple[float, int]] = {}  # key -> (last logged at, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        repeat = getattr(record, "repeat_key", None)
        text = str(repeat) if repeat is not None else record.getMessage()
        key = (record.name, record.levelno, _NUMBER.sub("#", text))
        now = self.clock()
        with self._lock:
            logged_at, left_out = self._seen.get(key, (-self.window_seconds, 0))
            if now - logged_at < self.window_seconds:
                self._seen[key] = (logged_at, left_out + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # bounded, whatever the messages
                self._seen = {key: (now, 0)}
        if left_out:
            record.msg = (
                f"{record.getMessage()} ... {left_out} more like this"
                f" in the last {now - logged_at:.0f}s"
            )
            record.args = None
        return True


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
    queued = logging.handlers.QueueHandler(records)
    queued.addFilter(RepeatFilter())
    root.handlers[:] = [queued]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
