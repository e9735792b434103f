"""What the poller remembers of each source's last page, in as little memory as it can.

The upstream list has no cursor, so each poll is compared with the page before it: which runs
were seen (``has``), and which finished runs are stored exactly as they are now (``unchanged``,
by fingerprint), so they need not be written again. 1,000 sources x 200 runs held as a dict of
UUIDs took ~46 MB; two sorted arrays of 64-bit hashes take 3.2 MB.

A hash collision would make one run look seen or unchanged when it is not; with at most a few
hundred hashes per source against a 61-bit hash space that is about 1 in 10^16 per lookup.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from uuid import UUID


class Window:
    __slots__ = ("_ids", "_runs")

    def __init__(self, runs: Iterable[tuple[UUID | int, int]] = ()) -> None:
        """``runs``: (run id, ``GenerationEvent.fingerprint``) pairs. A run id may also come as
        its 128-bit int (``UUID.int``, DuckDB's ``id::UHUGEINT``): it hashes the same."""
        pairs = list(runs)
        self._ids = array("q", sorted({hash(run_id) for run_id, _ in pairs}))
        self._runs = array("q", sorted({hash(pair) for pair in pairs}))

    def __len__(self) -> int:
        return len(self._ids)

    def has(self, run_id: UUID) -> bool:
        return _contains(self._ids, hash(run_id))

    def unchanged(self, run_id: UUID, fingerprint: int) -> bool:
        return _contains(self._runs, hash((run_id, fingerprint)))


def _contains(values: array[int], value: int) -> bool:
    i = bisect_left(values, value)
    return i < len(values) and values[i] == value
