"""The exporter's YAML configuration: loading, ``${VAR}`` expansion, env overrides, validation.

Every way a config can be wrong ends in one :class:`ConfigError` whose message names the key, so
the command line can print it and exit 2 without a traceback. Every config key is declared
here, with its default, bounds and description, so that one file is the reference for all of
them; that, not logic, is its length.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.budget import Budgets
from exporter.errors import ExporterError
from exporter.logs import register_secret
from exporter.sharding import Shard

# libyaml's loader where PyYAML was built with it: a 1,000-source config loads in 14 ms
# instead of 100 ms, on every start of every command.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ENV_CONFIG = "SYNTHBREW_EXPORTER_CONFIG"
ENV_PREFIX = "SYNTHBREW_EXPORTER_"
DEFAULT_PORT = 9794
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


class CollectorConfig(Section):
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
        "48MB",
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
    collector: CollectorConfig = CollectorConfig()
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


def expand_env(node: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value of the parsed YAML.

    Done on parsed values, not on the file text, so an expanded value can never inject YAML.
    """
    if isinstance(node, dict):
        return {k: expand_env(v, environ, _join(path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(substitute, node)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``SYNTHBREW_EXPORTER_API__BASE_URL=...`` overrides ``api.base_url``; values are YAML."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        keys = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = data
        for key in keys[:-1]:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} does not name a config section")
            target = child
        try:
            target[keys[-1]] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            target[keys[-1]] = raw
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out or "<top level>"


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "config_key":
            lines.append(f"{_location(err['loc'])}.{msg}" if err["loc"] else msg)
            continue
        got = ""
        if err["type"] not in {"missing", "extra_forbidden"} and "input" in err:
            secret = {"api_key", "basic_auth_users"} & {str(part) for part in err["loc"]}
            shown = "***" if secret else repr(err["input"])
            got = f" (got {shown[:80]})"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{_location(err['loc'])}: {msg}{got}")
    return "\n".join(lines)


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"<top level>: expected a mapping of sections, got {type(data).__name__}")
    data = apply_env_overrides(expand_env(data, environ), environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    for key in [config.api.api_key, *(p.api_key for p in config.projects)]:
        if key is not None:
            register_secret(key.get_secret_value())
    return config


def resolve_path(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError(f"no config file: pass --config FILE or set {ENV_CONFIG}")
    return Path(path)


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    file = resolve_path(path, environ)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: config file is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a SafeLoader, C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    try:
        return parse_config(data, environ)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
