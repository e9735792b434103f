"""Handing the memory the process has freed back to the system, every few seconds.

DuckDB's threads and Python allocate through glibc's malloc, which keeps freed memory in its
arenas and returns only what sits at the top of one. A checkpoint or a batch that allocates tens
of MB leaves its arena holding them, in scattered free pages, for the life of the process. With
100 million stored runs the real ``run`` grew from 240 to 280 MB in its first minutes of polling
while DuckDB's own memory stayed at 25 MB; calling ``malloc_trim`` every 5 s, which also releases
the free pages inside arenas, kept it at 240 MB (diagnostics on a 2-core machine). Cube Store calls
it after large work for the same reason. A C library without ``malloc_trim`` (musl, macOS)
is left alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

TRIM_SECONDS = 5.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        func = ctypes.CDLL(name).malloc_trim
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_size_t]
    func.restype = ctypes.c_int
    trim: Callable[[int], int] = func
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def can_trim() -> bool:
    return _MALLOC_TRIM is not None


def trim() -> bool:
    """Return freed memory to the system; whether any was returned. It takes each arena's lock
    in turn, a few ms with the exporter's heap: call it off the event loop."""
    return _MALLOC_TRIM is not None and _MALLOC_TRIM(0) == 1


async def _keep_trimmed(seconds: float) -> None:
    """Trim every ``seconds`` until cancelled; nothing where the C library cannot."""
    if not can_trim():
        return
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(trim)


@asynccontextmanager
async def trimmed(seconds: float = TRIM_SECONDS) -> AsyncIterator[None]:
    """Trim every ``seconds`` while the block runs."""
    task = asyncio.create_task(_keep_trimmed(seconds), name="trim")
    try:
        yield
    finally:
        task.cancel()
