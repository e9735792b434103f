"""How a command reaches the data: the database file, or the running exporter that holds it.

DuckDB lets one process write a database file and nobody else open it meanwhile. So a command
first tries the file itself (fast, and works when no exporter runs); when a running exporter
holds the lock it asks that exporter over HTTP (``/api/...``), which runs the same code against
its own connection. Both are a :class:`~exporter.data.Data`; :func:`open_data` is the one
place that chooses between them.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from exporter.config import Config, DatabaseConfig, ReportsConfig, load_config
from exporter.errors import NotConfigured, NotFound, Unavailable, kind_of_status
from exporter.export import ExportResult, export_parquet
from exporter.models import GenerationEvent
from exporter.reports import ReportInfo, ReportResult, find_report, load_reports, run_report
from exporter.sql import open_read_only, run_sql
from exporter.store import DatabaseLocked, Store
from exporter.targets import Target

ENV_WEB_AUTH = "SYNTHBREW_WEB_AUTH"
ENV_WEB_CA_FILE = "SYNTHBREW_WEB_CA_FILE"
T = TypeVar("T")


class RemoteError(Unavailable):
    """The running exporter could not be reached, or failed."""


@dataclass(frozen=True)
class SqlLimits:
    """The running exporter's bounds on ad-hoc SQL, applied to a local query too: the same
    answer either way."""

    memory_limit: str = DatabaseConfig().memory_limit
    threads: int = DatabaseConfig().threads
    max_rows: int = ReportsConfig().sql_max_rows
    timeout_seconds: float = ReportsConfig().sql_timeout_seconds

    @classmethod
    def of(cls, config: Config) -> SqlLimits:
        db, reports = config.database, config.reports
        return cls(db.memory_limit, db.threads, reports.sql_max_rows, reports.sql_timeout_seconds)


@dataclass(frozen=True)
class LocalFile:
    """The database file itself, opened for each call (read-only for reads) and closed after."""

    path: Path
    queries_dir: Path | None = None
    export_path: Path | None = None
    limits: SqlLimits = field(default_factory=SqlLimits)

    def reports(self) -> list[ReportInfo]:
        return [r.info for r in load_reports(self.queries_dir).values()]

    def run_report(self, name: str, params: Mapping[str, str]) -> ReportResult:
        report = find_report(load_reports(self.queries_dir), name)
        bound = report.bind(params)
        store = Store(self._existing(), read_only=True)
        try:
            return run_report(store.cursor(), report, bound)
        finally:
            store.close(checkpoint=False)

    def run_sql(self, sql: str) -> ReportResult:
        """On a read-only, contained instance (``exporter.sql``), bounded as the exporter is."""
        limits = self.limits
        conn = open_read_only(self._existing(), limits.memory_limit, limits.threads)
        try:
            return run_sql(
                conn, sql, max_rows=limits.max_rows, timeout_seconds=limits.timeout_seconds
            ).plain()
        finally:
            conn.close()

    def export(self) -> ExportResult:
        if self.export_path is None:
            raise NotConfigured("no export directory: pass --output DIR or set export.path")
        store = Store(self.path)
        try:
            return export_parquet(store, self.export_path, datetime.now(UTC))
        finally:
            store.close()

    def store_run(self, target: Target, run: GenerationEvent) -> str:
        store = Store(self.path)
        try:
            store.ingest_page(*target.key, [run], now=datetime.now(UTC))
        finally:
            store.close()
        return f"stored run {run.id} in {self.path}"

    def _existing(self) -> Path:
        if not self.path.exists():
            raise NotFound(f"{self.path}: no such database (run `collect` or `run` first)")
        return self.path


@dataclass(frozen=True)
class RunningExporter:
    """A running exporter's ``/api`` endpoints, with the credentials and CA from the
    environment when its endpoints are protected (basic auth, TLS with a private CA)."""

    url: str
    export_path: Path | None = None  # where it exports to, when known from the config

    def reports(self) -> list[ReportInfo]:
        return [ReportInfo.from_json(r) for r in self._call("GET", "/api/reports")["reports"]]

    def run_report(self, name: str, params: Mapping[str, str]) -> ReportResult:
        answer = self._call("GET", f"/api/reports/{name}", params=dict(params))
        return ReportResult.from_json(answer)

    def run_sql(self, sql: str) -> ReportResult:
        return ReportResult.from_json(self._call("POST", "/api/sql", json={"sql": sql}))

    def export(self) -> ExportResult:
        return ExportResult(**self._call("POST", "/api/export"))

    def store_run(self, target: Target, run: GenerationEvent) -> str:
        """Ask the exporter to poll the source now: it holds the database."""
        self._call("POST", "/api/poll/{}/{}".format(*target.labels))
        return "the running exporter polled the source: the run is stored"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; an answer with an error status becomes the error kind it stands for
        (``exporter.errors``), so a refused query is the user's to fix either way."""
        user, sep, password = os.environ.get(ENV_WEB_AUTH, "").partition(":")
        auth = httpx.BasicAuth(user, password) if sep else None
        ca_file = os.environ.get(ENV_WEB_CA_FILE)
        try:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=ca_file) if ca_file else True
            )
        except (OSError, ssl.SSLError) as exc:
            raise RemoteError(f"{ENV_WEB_CA_FILE}={ca_file}: cannot load the CA: {exc}") from None
        url = f"{self.url}{path}"
        try:
            response = httpx.request(method, url, timeout=120, auth=auth, verify=verify, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the running exporter at {self.url}: {exc}") from None
        if response.status_code < 400:
            return response.json()
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        kind = kind_of_status(response.status_code)
        if kind is not None and isinstance(error, str):
            raise kind(error)  # the exporter's own answer (exporter.errors), not a stray server's
        raise RemoteError(f"{url}: HTTP {response.status_code}: {error or response.text[:200]}")


@dataclass(frozen=True)
class FileOrExporter:
    """The file while no exporter holds it, else the exporter; decided on each call, since an
    exporter may start or stop between two queries of the interactive prompt."""

    local: LocalFile
    remote: RunningExporter | None

    def reports(self) -> list[ReportInfo]:
        return self.local.reports()  # the queries directory, not the database

    def run_report(self, name: str, params: Mapping[str, str]) -> ReportResult:
        return self._either(lambda data: data.run_report(name, params), self.remote)

    def run_sql(self, sql: str) -> ReportResult:
        return self._either(lambda data: data.run_sql(sql), self.remote)

    def export(self) -> ExportResult:
        remote = self.remote
        if remote is not None and self.local.export_path != remote.export_path:
            raise_instead = "it exports only to export.path; drop --output or stop it"
            return self._either(lambda data: data.export(), None, raise_instead)
        return self._either(lambda data: data.export(), remote)

    def store_run(self, target: Target, run: GenerationEvent) -> str:
        return self._either(lambda data: data.store_run(target, run), self.remote)

    def _either(
        self,
        call: Callable[[LocalFile | RunningExporter], T],
        remote: RunningExporter | None,
        why_not_remote: str = "pass --url or --config",
    ) -> T:
        try:
            return call(self.local)
        except DatabaseLocked:
            if remote is None:
                message = f"{self.local.path} is locked by a running exporter: {why_not_remote}"
                raise Unavailable(message) from None
            return call(remote)


def open_data(
    config_path: Path | None,
    *,
    database: Path | None = None,
    url: str | None = None,
    export_to: Path | None = None,
) -> FileOrExporter | RunningExporter:
    """Where a command's data comes from: ``url`` alone is that exporter; ``database`` alone
    that file with the default bounds; otherwise the config's file, falling back to the
    config's running exporter (``server.url``) while that holds it."""
    if url:
        return RunningExporter(url.rstrip("/"))
    if database is not None:
        return FileOrExporter(LocalFile(database), None)
    return configured_data(config_path, export_to=export_to)


def configured_data(config_path: Path | None, *, export_to: Path | None = None) -> FileOrExporter:
    """The config's file, falling back to the config's running exporter while that holds it."""
    config = load_config(config_path)
    local = LocalFile(
        config.database.path,
        config.reports.queries_dir,
        export_to or config.export.path,
        SqlLimits.of(config),
    )
    return FileOrExporter(local, RunningExporter(config.server.url, config.export.path))
