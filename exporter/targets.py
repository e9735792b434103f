"""The configured sources this replica polls, each with what a poll of it needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from exporter.config import Config, ProjectConfig, SourceConfig
from exporter.errors import NotFound
from exporter.models import SourceKey
from exporter.sharding import Shard


@dataclass(frozen=True)
class Target:
    """A configured source, with everything needed to poll it."""

    project: ProjectConfig
    source: SourceConfig
    api_key: SecretStr
    interval_seconds: float

    @property
    def key(self) -> SourceKey:
        return self.project.id, self.source.id

    @property
    def labels(self) -> tuple[str, str]:
        return self.project.name, self.source.name

    @property
    def name(self) -> str:
        return f"{self.project.name}/{self.source.name}"


def targets(config: Config, *, every_shard: bool = False) -> list[Target]:
    """This replica's sources: all of them, or its shard's share (``collector.shard``)."""
    shard = Shard(0, 1) if every_shard else Shard.parse(config.collector.shard)
    return [
        Target(
            project=project,
            source=source,
            api_key=config.api_key_for(project),
            interval_seconds=source.interval_seconds or config.collector.interval_seconds,
        )
        for project in config.projects
        for source in project.sources
        if shard.owns(source.id)
    ]


def find_target(candidates: Sequence[Target], project: str, source: str) -> Target:
    """A source by project and source, each given by name or id."""
    for t in candidates:
        if project in (t.project.name, str(t.project.id)) and source in (
            t.source.name,
            str(t.source.id),
        ):
            return t
    known = ", ".join(t.name for t in candidates)
    raise NotFound(f"{project}/{source}: no such configured source (known: {known})")
