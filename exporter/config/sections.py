"""Every config key, declared once with its default, bounds and description: one file is the
reference for all of them (docs/configuration.md follows it); that, not logic, is its length.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.budget import Budgets
from exporter.errors import ExporterError
from exporter.sharding import Shard
from exporter.store.db import MEMORY_LIMIT

DEFAULT_PORT = 9794


class ConfigError(ExporterError):
    """A configuration problem, worded for the operator who has to fix the file."""

    exit_code = 2


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]


def split_listen(value: str) -> tuple[str, int]:
    host, _, port = _check_listen(value).rpartition(":")
    return host.strip("[]"), int(port)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(Section):
    attempts: int = Field(3, ge=1, le=10, description="tries per request, the first included")
    backoff_seconds: float = Field(0.5, gt=0, le=60)
    max_backoff_seconds: float = Field(30.0, gt=0, le=600)
    max_retry_after_seconds: float = Field(
        60.0, ge=0, description="a longer Retry-After is not waited out: the poll fails instead"
    )


class ApiConfig(Section):
    base_url: str = Field(pattern=r"^https?://[^\s]+$")
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    max_concurrency: int = Field(4, ge=1, le=256)
    requests_per_minute: float | None = Field(
        None,
        gt=0,
        description="the API key's request budget; unset: no limit until the upstream answers 429",
    )
    rate_window_seconds: float = Field(
        60.0, gt=0, le=3600, description="the window over which the upstream counts requests"
    )
    retry: RetryConfig = RetryConfig()


def _check_shard(value: str) -> str:
    return str(Shard.parse(value))


class PollingConfig(Section):
    """The ``collector:`` section: how sources are polled. The key keeps its name because it is
    part of every config file in use; in the code, "collector" means a Prometheus collector."""

    interval_seconds: float = Field(60.0, ge=1)
    page_limit: int = Field(200, ge=1, le=200)
    min_interval_seconds: float = Field(
        5.0, ge=0.1, description="the floor when an overflowing source is polled sooner"
    )
    quiet_page_limit: int | None = Field(
        None,
        ge=1,
        le=200,
        description="opt-in: a smaller page for a source with nothing in flight; unset, every"
        " poll asks for page_limit, as the contract requires unless configured lower",
    )
    in_flight_interval_seconds: float | None = Field(
        None,
        ge=0.1,
        description="a source with a run in flight is polled at least this often; unset: its"
        " interval",
    )
    max_interval_seconds: float | None = Field(
        None,
        ge=1,
        description="an idle source is polled less often, up to this; unset: never less often"
        " than its interval",
    )
    stale_after_seconds: float = Field(
        3600.0, gt=0, description="an unfinished run unseen this long is flagged stale"
    )
    shutdown_grace_seconds: float = Field(15.0, ge=0)
    shard: Annotated[str, AfterValidator(_check_shard)] = Field(
        "0/1", description="INDEX/COUNT: poll only this replica's share of the sources"
    )


class MetricsConfig(Section):
    refresh_seconds: float = Field(
        5.0, ge=0.1, le=300, description="how far /metrics may lag the store, at most"
    )
    duration_buckets: list[float] = Field(
        default=[0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200],
        min_length=1,
        description="upper bounds (seconds) of synthbrew_generation_duration_seconds",
    )

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        bounds = self.duration_buckets
        if any(b <= 0 for b in bounds) or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("duration_buckets must be positive and strictly increasing")
        return self


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r} (expected an IANA name such as UTC)"
        ) from None
    return value


class BillingConfig(Section):
    timezone: Annotated[str, AfterValidator(_check_timezone)] = "UTC"
    price_per_1000_rows: float | None = Field(None, ge=0)
    currency: str = Field("USD", min_length=1, max_length=10)
    included_rows: dict[str, int] = Field(
        default_factory=dict, description="monthly included billable rows, by project name"
    )


class ExportConfig(Section):
    path: Path | None = Field(None, description="Parquet dataset directory; unset: no export")
    interval_seconds: float | None = Field(
        None, ge=60, description="export on this schedule inside `run`; unset: only on demand"
    )


class ReportsConfig(Section):
    queries_dir: Path | None = Field(None, description="default: the bundled queries/")
    sql_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="ad-hoc SQL over HTTP is stopped after this long"
    )
    sql_max_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="ad-hoc SQL over HTTP returns at most this many"
    )


class DatabaseConfig(Section):
    path: Path = Path("synthbrew.duckdb")
    memory_limit: str = Field(
        MEMORY_LIMIT,
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="DuckDB's buffer pool cap; DuckDB's own default is 80% of RAM",
    )
    threads: int = Field(2, ge=1, le=64, description="DuckDB worker threads")


def _readable_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"no such file: {value}")
    return value


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


def _check_bcrypt(value: SecretStr) -> SecretStr:
    if not _BCRYPT.match(value.get_secret_value()):
        raise ValueError("expected a bcrypt hash ($2b$...), e.g. from `htpasswd -nBC 12 USER`")
    return value


class TlsServerConfig(Section):
    """As in the Prometheus exporter-toolkit web config."""

    cert_file: ReadableFile
    key_file: ReadableFile


class ServerConfig(Section):
    listen: Listen = f"127.0.0.1:{DEFAULT_PORT}"
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, Annotated[SecretStr, AfterValidator(_check_bcrypt)]] = Field(
        default_factory=dict, description="user name -> bcrypt hash of the password"
    )

    @property
    def url(self) -> str:
        """Where a local client reaches this server (a wildcard address means loopback)."""
        host, port = split_listen(self.listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls_server_config else "http"
        return f"{scheme}://{host}:{port}"


class SourceConfig(Section):
    id: UUID
    name: str = Field("", max_length=200)
    interval_seconds: float | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _default_name(self) -> Self:
        if not self.name:
            object.__setattr__(self, "name", str(self.id))
        return self


class ProjectConfig(Section):
    id: UUID
    name: str = Field("", max_length=200)
    api_key: SecretStr | None = None
    requests_per_minute: float | None = Field(
        None, gt=0, description="this project's own key's budget; default: api.requests_per_minute"
    )
    sources: list[SourceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> Self:
        if not self.name:
            object.__setattr__(self, "name", str(self.id))
        if self.requests_per_minute is not None and self.api_key is None:
            raise _keyed_error(
                "requests_per_minute", "needs the project's own api_key (a budget is per key)"
            )
        _require_unique([s.name for s in self.sources], "name", "sources")
        _require_unique([str(s.id) for s in self.sources], "id", "sources")
        return self


class Config(Section):
    api: ApiConfig
    collector: PollingConfig = PollingConfig()
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    metrics: MetricsConfig = MetricsConfig()
    billing: BillingConfig = BillingConfig()
    export: ExportConfig = ExportConfig()
    reports: ReportsConfig = ReportsConfig()
    projects: list[ProjectConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        _require_unique([p.name for p in self.projects], "name", "projects")
        _require_unique([str(p.id) for p in self.projects], "id", "projects")
        names = {p.name for p in self.projects}
        for name in self.billing.included_rows:
            if name not in names:
                raise _keyed_error(
                    f"billing.included_rows.{name}", "no configured project has this name"
                )
        if self.api.api_key is None:
            for i, project in enumerate(self.projects):
                if project.api_key is None:
                    raise _keyed_error(
                        f"projects[{i}].api_key",
                        f"no API key for project {project.name!r}; set api.api_key"
                        " or the project's api_key",
                    )
        return self

    def budgets(self) -> Budgets:
        """The request budget of every API key in use: the default one, and each project's own."""
        default = self.api.api_key.get_secret_value() if self.api.api_key else None
        return Budgets(
            self.api.requests_per_minute,
            default,
            [
                (
                    p.name,
                    p.api_key.get_secret_value(),
                    p.requests_per_minute or self.api.requests_per_minute,
                )
                for p in self.projects
                if p.api_key is not None
            ],
            window=self.api.rate_window_seconds,
        )

    def api_key_for(self, project: ProjectConfig) -> SecretStr:
        key = project.api_key or self.api.api_key
        assert key is not None, "validated in _cross_checks"
        return key

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data, every secret replaced, for printing."""
        return self.model_dump(mode="json")


def _keyed_error(key: str, problem: str) -> PydanticCustomError:
    """A cross-field error that carries its own key path, relative to where it was raised."""
    return PydanticCustomError("config_key", "{key}: {problem}", {"key": key, "problem": problem})


def _require_unique(values: list[str], key: str, where: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise _keyed_error(
                f"{where}[{i}].{key}", f"duplicate {key} {value!r} (also {where}[{seen[value]}])"
            )
        seen[value] = i
