"""DuckDB storage of every polled run, built so its cost does not grow with history.

- ``schema``: tables, views, migrations, and the run rules in SQL
- ``db``: opening the file, transactions, errors
- ``ingest``: writing a batch of pages
- ``totals``: keeping the running totals /metrics reads
- ``history``: moving runs that can no longer change out of the indexed live table
- ``bookkeeping``: failed polls, the sources' names, what ``export`` wrote
- ``reads``: poll state, windows, the running totals, counts and in-flight gauges
- ``store``: the ``Store`` that owns the file; ``queue``: batching pages into transactions
"""

from exporter.errors import StoreError
from exporter.store.db import DatabaseLocked
from exporter.store.ingest import PAGE_SCHEMA, PageIn, page_table
from exporter.store.queue import IngestQueue
from exporter.store.reads import PollState
from exporter.store.schema import MIGRATIONS
from exporter.store.store import Store
from exporter.store.totals import Rollups

__all__ = [
    "MIGRATIONS",
    "PAGE_SCHEMA",
    "DatabaseLocked",
    "IngestQueue",
    "PageIn",
    "PollState",
    "Rollups",
    "Store",
    "StoreError",
    "page_table",
]
