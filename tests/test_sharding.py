from __future__ import annotations

from collections import Counter
from uuid import uuid4

import pytest

from exporter.config import ConfigError, parse_config
from exporter.sharding import Shard, shard_of
from exporter.targets import targets
from tests.factories import good_config_data

SOURCES = [uuid4() for _ in range(3000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_source_in_exactly_one_shard(count: int) -> None:
    owners = {s: [i for i in range(count) if Shard(i, count).owns(s)] for s in SOURCES}
    assert all(len(o) == 1 for o in owners.values())
    sizes = Counter(o[0] for o in owners.values())
    assert min(sizes.values()) > len(SOURCES) / count * 0.85, sizes


def test_adding_sources_moves_none() -> None:
    before = {s: shard_of(s, 5) for s in SOURCES}
    more = SOURCES + [uuid4() for _ in range(1000)]
    assert {s: shard_of(s, 5) for s in more if s in before} == before


def test_adding_a_replica_moves_only_its_share() -> None:
    moved = sum(shard_of(s, 4) != shard_of(s, 5) for s in SOURCES)
    assert 0.15 < moved / len(SOURCES) < 0.25, "about 1/5 move, all to the new shard"
    assert all(shard_of(s, 5) == 4 for s in SOURCES if shard_of(s, 4) != shard_of(s, 5))


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "1/0", ""])
def test_bad_shards(text: str) -> None:
    with pytest.raises(ValueError, match="INDEX"):
        Shard.parse(text)


def test_config_shard_filters_targets() -> None:
    raw = good_config_data()
    raw["projects"][0]["sources"] = [{"id": str(s)} for s in SOURCES[:30]]
    seen: list[str] = []
    for index in range(3):
        raw["collector"] = {"shard": f"{index}/3"}
        seen += [t.name for t in targets(parse_config(raw, {}))]
    everything = [t.name for t in targets(parse_config(raw, {}), every_shard=True)]
    assert sorted(seen) == sorted(everything)
    assert len(everything) == 30


def test_config_rejects_a_bad_shard() -> None:
    raw = good_config_data()
    raw["collector"] = {"shard": "2/2"}
    with pytest.raises(ConfigError, match=r"collector\.shard"):
        parse_config(raw, {})
