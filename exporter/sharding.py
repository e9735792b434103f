"""Splitting sources across replicas without coordination.

Each replica is told ``INDEX/COUNT`` and polls only the sources that rendezvous hashing assigns
to its index. Every replica computes the same answer from the source id alone, so no two poll the
same source, none is left out, adding a source moves no other, and changing COUNT moves only the
sources the new shard wins (about 1/COUNT of them), not nearly all as ``hash % COUNT`` would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"expected INDEX/COUNT with 0 <= INDEX < COUNT, got {self}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"expected INDEX/COUNT such as 0/3, got {text!r}")
        return cls(int(index), int(count))

    def owns(self, source_id: UUID) -> bool:
        return shard_of(source_id, self.count) == self.index


def shard_of(source_id: UUID, count: int) -> int:
    """The shard with the highest score for this source (highest random weight hashing)."""
    return max(range(count), key=lambda shard: _score(source_id, shard))


def _score(source_id: UUID, shard: int) -> int:
    digest = hashlib.blake2b(source_id.bytes + shard.to_bytes(4, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big")
