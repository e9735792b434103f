"""The errors the exporter raises on purpose, by what went wrong, each with the HTTP status
and the exit code it stands for (as httpx's ``_exceptions`` module does for its own).

Callers catch the kind they can handle; the web layer and the CLI turn any of them into a
status or an exit code through :attr:`ExporterError.http_status` / :attr:`exit_code`, never by
the class of a built-in exception. The text of every one is safe to show: it never holds an
API key.

    ExporterError                                                                 500 / exit 1
    ├── InvalidInput            a parameter, query or option the user can fix     400 / exit 2
    │   ├── NotFound            a report, source or database that does not exist  404 / exit 2
    │   ├── ReportError         a report file or parameter (exporter.reports)
    │   └── SqlError            a refused or failed ad-hoc query (exporter.sql)
    ├── NotConfigured           needs a config key that is not set                409 / exit 2
    ├── Unavailable             cannot be done now                                503 / exit 1
    │   ├── StoreError          the database cannot be opened or written (exporter.store)
    │   └── RemoteError         the running exporter cannot be reached (exporter.access)
    ├── ConfigError             a config mistake, naming the key (exporter.config)  exit 2
    └── UpstreamError           the Synthbrew API failed or refused (exporter.client)
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""

    http_status = 500
    exit_code = 1


class InvalidInput(ExporterError):
    http_status = 400
    exit_code = 2


class NotFound(InvalidInput):
    http_status = 404


class NotConfigured(ExporterError):
    http_status = 409
    exit_code = 2


class Unavailable(ExporterError):
    http_status = 503
    exit_code = 1


class StoreError(Unavailable):
    """The database cannot be opened or written, worded for the operator (``exporter.store``
    raises it; here so that what reports failures can know it without importing the store)."""


def kind_of_status(status: int) -> type[ExporterError] | None:
    """The error kind an exporter's HTTP answer stands for, read back from the statuses above
    (a client of ``/api`` raises what the server raised); None for any other status."""
    return {k.http_status: k for k in (InvalidInput, NotFound, NotConfigured)}.get(status)
