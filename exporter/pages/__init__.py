"""Pages for people: ``/usage`` (billing and usage with charts) and ``/reports`` (every named
report with a form, a sortable table, downloads and a chart where its header declares one)."""

from exporter.pages.routes import ReportSource, page_routes
from exporter.pages.usage import Catalog

__all__ = ["Catalog", "ReportSource", "page_routes"]
