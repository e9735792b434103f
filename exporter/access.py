"""Reading the database from a second process, as seamlessly as DuckDB allows.

DuckDB lets one process write a database file and nobody else open it meanwhile. So ``report``
and ``export`` first try the file directly (fast, and works when no exporter runs); when a running
exporter holds the lock they ask that exporter over HTTP instead (``/api/reports``,
``/api/export``), which runs the same code against its own connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from exporter.export import ExportResult, export_parquet
from exporter.models import GenerationEvent
from exporter.reports import Report, ReportError, ReportResult, run_report
from exporter.sql import SqlError, open_read_only, run_sql
from exporter.store import Store

ENV_WEB_AUTH = "SYNTHBREW_WEB_AUTH"
ENV_WEB_CA_FILE = "SYNTHBREW_WEB_CA_FILE"


class RemoteError(Exception):
    """The running exporter could not be reached or refused the request."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def local_report(db: Path, report: Report, params: Mapping[str, Any]) -> ReportResult:
    if not db.exists():
        raise ReportError(f"{db}: no such database (run `collect` or `run` first)")
    store = Store(db, read_only=True)
    try:
        return run_report(store.cursor(), report, params)
    finally:
        store.close(checkpoint=False)


def remote_reports(url: str) -> list[dict[str, Any]]:
    answer = _call("GET", f"{url}/api/reports")
    return list(answer["reports"])


def remote_report(url: str, name: str, params: Mapping[str, str]) -> ReportResult:
    return ReportResult.from_json(_call("GET", f"{url}/api/reports/{name}", params=dict(params)))


def local_sql(
    db: Path, sql: str, *, memory_limit: str, threads: int, max_rows: int, timeout_seconds: float
) -> ReportResult:
    """The query on a read-only, contained instance of a database no exporter holds, bounded as
    the running exporter bounds it, so both ways give the same answer."""
    if not db.exists():
        raise SqlError(f"{db}: no such database (run `collect` or `run` first)")
    conn = open_read_only(db, memory_limit, threads)
    try:
        return run_sql(conn, sql, max_rows=max_rows, timeout_seconds=timeout_seconds).plain()
    finally:
        conn.close()


def remote_sql(url: str, sql: str) -> ReportResult:
    """The query through the running exporter; a refused or failed query is the user's to fix
    (SqlError), exactly as it would be on a free file."""
    try:
        return ReportResult.from_json(_call("POST", f"{url}/api/sql", json={"sql": sql}))
    except RemoteError as exc:
        if exc.status == 400:
            raise SqlError(exc.detail) from None
        raise


def remote_export(url: str) -> ExportResult:
    return ExportResult(**_call("POST", f"{url}/api/export"))


def local_export(db: Path, root: Path) -> ExportResult:
    store = Store(db)
    try:
        return export_parquet(store, root, datetime.now(UTC))
    finally:
        store.close()


def local_ingest(
    db: Path, project_id: UUID, source_id: UUID, events: list[GenerationEvent]
) -> None:
    store = Store(db)
    try:
        store.ingest_page(project_id, source_id, events, now=datetime.now(UTC))
    finally:
        store.close()


def remote_poll(url: str, project: str, source: str) -> dict[str, Any]:
    """Ask the running exporter to poll one source now (it holds the database)."""
    return dict(_call("POST", f"{url}/api/poll/{project}/{source}"))


def _call(method: str, url: str, **kwargs: Any) -> Any:
    """One request to the running exporter, with the credentials and CA from the environment
    when its endpoints are protected (basic auth, TLS with a private CA)."""
    user, sep, password = os.environ.get(ENV_WEB_AUTH, "").partition(":")
    auth = httpx.BasicAuth(user, password) if sep else None
    ca_file = os.environ.get(ENV_WEB_CA_FILE)
    try:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file else True
        )
    except (OSError, ssl.SSLError) as exc:
        raise RemoteError(f"{ENV_WEB_CA_FILE}={ca_file}: cannot load the CA: {exc}") from None
    try:
        response = httpx.request(method, url, timeout=120, auth=auth, verify=verify, **kwargs)
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach the running exporter at {url}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise RemoteError(
            f"{url}: HTTP {response.status_code}: {detail}", response.status_code, detail
        )
    return response.json()
