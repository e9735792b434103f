"""What /metrics shows about Synthbrew and the store, one collector per concern.

``generation`` (runs, rows, in flight, last finish, names), ``billing`` (this month's usage and
cost), ``store`` (tables, memory, writes), each run on its own by ``isolation``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from exporter.config import BillingConfig
from exporter.metrics.billing import Billing
from exporter.metrics.generation import (
    InProgress,
    LastFinished,
    Rows,
    Runs,
    SourceInfo,
    SourceNames,
)
from exporter.metrics.isolation import Isolated
from exporter.metrics.store import StoreTables, StoreWrites
from exporter.models import SourceKey
from exporter.store import Store
from exporter.supervision import Faults

__all__ = ["Isolated", "SourceNames", "store_metrics"]


def store_metrics(
    store: Store,
    names: Mapping[SourceKey, SourceNames],
    billing: BillingConfig | None = None,
    faults: Faults | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Isolated:
    """Every store-backed collector, each failing alone; the ``collector`` label's values."""
    return Isolated(
        {
            "runs": Runs(store, names),
            "rows": Rows(store, names),
            "in_progress": InProgress(store, names),
            "last_finished": LastFinished(store, names),
            "source_info": SourceInfo(store, names),
            "billing": Billing(store, names, billing or BillingConfig(), now),
            "store_tables": StoreTables(store),
            "store_writes": StoreWrites(store),
        },
        faults or Faults(),
    )
