"""Freed memory goes back to the system: measured on a fresh interpreter's resident set."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from exporter import heap

# Fills ~200 MB with blocks malloc serves (larger than Python's small-object allocator takes),
# frees 49 of every 50, so the rest pins the freed pages inside the heap where only a trim
# returns them, then prints the resident MB before and after ``{call}``.
_FRAGMENT = """
import asyncio
from exporter import heap

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

blocks = [bytes(600 + i % 2400) for i in range(120_000)]
kept = blocks[::50]
del blocks
before = rss_mb()
{call}
print(before, rss_mb())
"""

_LOOP = """
async def main():
    async with heap.trimmed(0.05):
        await asyncio.sleep(0.5)
asyncio.run(main())
"""

pytestmark = pytest.mark.skipif(
    not heap.can_trim(), reason="this C library has no malloc_trim (not glibc)"
)


def _resident_before_and_after(call: str) -> tuple[float, float]:
    script = textwrap.dedent(_FRAGMENT).replace("{call}", textwrap.dedent(call))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after = map(float, done.stdout.split())
    return before, after


def test_freed_pages_stay_resident_without_a_trim() -> None:
    """The premise: glibc keeps what was freed inside its heap."""
    before, after = _resident_before_and_after("pass")
    assert before > 150
    assert after > before - 10


def test_a_trim_returns_them() -> None:
    before, after = _resident_before_and_after("assert heap.trim()")
    assert after < before - 100


def test_it_trims_on_its_own_while_the_exporter_runs() -> None:
    before, after = _resident_before_and_after(_LOOP)
    assert after < before - 100
