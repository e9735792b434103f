"""The exporter's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and a landing page.

A scrape is served the latest rendering of the registry (see ``exposition``), so its cost does
not grow with the number of series; blocking work runs on Starlette's thread pool, and the poll
loop on the event loop never waits for a scrape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

import bcrypt
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from exporter import __version__
from exporter.data import Data
from exporter.errors import ExporterError
from exporter.exposition import ExpositionCache
from exporter.logs import mask


@dataclass(frozen=True)
class SourceStatus:
    project: str
    source: str
    project_id: str
    source_id: str
    last_poll_at: datetime | None
    outcome: str | None
    error_reason: str | None
    error_message: str | None
    events_stored: int
    interval_seconds: float
    page_limit: int


class Status(Protocol):
    def readiness(self) -> str | None: ...

    def store_problem(self) -> str | None: ...

    def sources(self) -> Sequence[SourceStatus]: ...


class Api(Data, Protocol):
    """What the running exporter offers to a second process that cannot open the database:
    the same :class:`~exporter.data.Data` a command reads a free file through, and a poll
    on demand (``regenerate`` storing its run)."""

    async def poll_now(self, project: str, source: str) -> dict[str, object]: ...


class BasicAuth:
    """HTTP basic auth against bcrypt hashes, as the Prometheus exporter-toolkit does it.

    bcrypt is slow on purpose (tens of milliseconds), so a verified (user, password) pair is
    remembered by a digest for the life of the process; a wrong password is never cached.
    Health endpoints stay open: they say nothing, and probes rarely carry credentials.
    """

    OPEN = frozenset({"/healthz", "/readyz"})

    def __init__(self, app: ASGIApp, users: Mapping[str, SecretStr]) -> None:
        self.app = app
        self.users = {name: h.get_secret_value().encode() for name, h in users.items()}
        self._verified: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        if await self._allowed(header):
            await self.app(scope, receive, send)
            return
        denied = PlainTextResponse(
            "unauthorized\n",
            status_code=401,
            headers={"www-authenticate": 'Basic realm="synthbrew-exporter"'},
        )
        await denied(scope, receive, send)

    async def _allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        digest = hashlib.sha256(f"{user}\0{password}\0".encode() + hashed).digest()
        if digest in self._verified:
            return True
        ok = await run_in_threadpool(bcrypt.checkpw, password.encode(), hashed)
        if ok:
            self._verified.add(digest)
        return ok


def build_app(
    exposition: ExpositionCache,
    status: Status,
    api: Api | None = None,
    users: Mapping[str, SecretStr] | None = None,
    pages: Sequence[BaseRoute] = (),
) -> Starlette:
    async def metrics(request: Request) -> Response:
        snapshot = await run_in_threadpool(lambda: exposition.snapshot)
        openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
        rendered = snapshot.openmetrics if openmetrics else snapshot.text
        headers = {"content-type": rendered.content_type}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            return Response(rendered.gzipped, headers=headers)
        # Only compressed renderings are kept; the rare client without gzip costs a decompress.
        return Response(await run_in_threadpool(lambda: rendered.body), headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = status.readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "detail": mask(reason)}, status_code=503)

    async def landing(request: Request) -> Response:
        sources = await run_in_threadpool(status.sources)
        return HTMLResponse(render_landing(sources, status.store_problem()))

    routes: list[BaseRoute] = [
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/", landing),
        *(api_routes(api) if api is not None else ()),
        *pages,
    ]
    middleware = [Middleware(BasicAuth, users=users)] if users else []
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ExporterError: exporter_error},
    )


async def exporter_error(request: Request, exc: Exception) -> Response:
    """An error the exporter raised on purpose: its status (``exporter.errors``) and text."""
    status = exc.http_status if isinstance(exc, ExporterError) else 500
    return JSONResponse({"error": mask(str(exc))}, status_code=status)


def api_routes(api: Api) -> list[BaseRoute]:
    """``/api``: what ``report``, ``sql``, ``export`` and ``regenerate`` ask of a running
    exporter that holds the database."""

    async def list_reports(request: Request) -> Response:
        return JSONResponse({"reports": [r.to_json() for r in api.reports()]})

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        result = await run_in_threadpool(api.run_report, name, dict(request.query_params))
        return JSONResponse(result.to_json())

    async def sql(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return JSONResponse({"error": 'expected a JSON body {"sql": "SELECT ..."}'}, 400)
        result = await run_in_threadpool(api.run_sql, body["sql"])
        return JSONResponse(result.to_json())

    async def export(request: Request) -> Response:
        return JSONResponse(asdict(await run_in_threadpool(api.export)))

    async def poll(request: Request) -> Response:
        project, source = request.path_params["project"], request.path_params["source"]
        return JSONResponse(await api.poll_now(project, source))

    return [
        Route("/api/reports", list_reports),
        Route("/api/reports/{name}", report),
        Route("/api/sql", sql, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/poll/{project}/{source}", poll, methods=["POST"]),
    ]


def render_landing(sources: Sequence[SourceStatus], store_problem: str | None = None) -> str:
    """The page; error texts (which may quote an upstream answer) pass through the same masking
    as the log, so a key echoed by a server never reaches it."""

    def e(text: str) -> str:
        return html.escape(mask(text))

    banner = (
        f"<p class='error' role='alert'>The database cannot be written: {e(store_problem)}</p>"
        if store_problem
        else ""
    )
    rows = "\n".join(
        "<tr>"
        f"<td>{e(s.project)}</td><td>{e(s.source)}</td>"
        f"<td><code>{e(s.source_id)}</code></td>"
        f"<td>{e(s.last_poll_at.isoformat(timespec='seconds')) if s.last_poll_at else 'never'}</td>"
        f"<td class='{e(s.outcome or 'none')}'>{e(s.outcome or '-')}</td>"
        f"<td>{e(s.error_reason or '')}</td><td>{e(s.error_message or '')}</td>"
        f"<td>{s.events_stored}</td><td>{s.interval_seconds:g}s</td><td>{s.page_limit}</td>"
        "</tr>"
        for s in sources
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthbrew-exporter</title>
<link rel="icon" href="/static/favicon.svg">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .3rem .7rem; border-bottom: 1px solid #ddd; }}
.success {{ color: #1a7f37; }} .error {{ color: #cf222e; font-weight: bold; }}
</style></head>
<body>
<h1>synthbrew-exporter</h1>
<p>Version {e(__version__)} &middot; <a href="/usage">Usage and billing</a> &middot;
<a href="/reports">Reports</a> &middot; <a href="/metrics">/metrics</a> &middot;
<a href="/healthz">/healthz</a> &middot; <a href="/readyz">/readyz</a></p>
{banner}
<table>
<thead><tr><th>project</th><th>source</th><th>source id</th><th>last poll</th><th>outcome</th>
<th>error</th><th>message</th><th>events stored</th><th>interval</th><th>page size</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
