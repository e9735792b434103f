"""The whole /metrics exposition of a known store and known poll outcomes, compared byte for byte
with ``tests/golden/metrics.txt``.

That file is the contract dashboards, alerting rules and users' queries are written against:
every family's name, HELP text and TYPE, its label names, and the series a known store yields.
A diff in it is a reviewed change of names, help texts or labels (or of what a known store
exposes), never an accident: after such a change, regenerate it deliberately with

    SYNTHBREW_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_metrics.py

and review the diff of ``tests/golden/metrics.txt`` with the change that caused it.

The registry is built as ``exporter.service.open_exporter`` builds it (the exporter's own
families, the fault counter, the store-backed collectors, the API keys), over a real DuckDB
file written through the real ``Store``; only the clocks and the ids are fixed. The few values
no test can fix (process memory and CPU, the garbage collector, DuckDB's memory, time spent,
versions) are replaced by :func:`normalise`, on the families it names only: their HELP, TYPE
and label names stay byte-exact, and so does every other line. The process_* families are
those prometheus_client exposes on Linux, where CI runs.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from prometheus_client import CollectorRegistry

from exporter.budget import Budgets
from exporter.config import parse_config
from exporter.exposition import ExpositionCache
from exporter.models import GenerationEvent
from exporter.selfmetrics import ExporterStats
from exporter.service import metrics_registry, open_store
from exporter.store import Store
from exporter.supervision import Faults
from exporter.targets import targets
from tests.factories import T0, run

GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"
UPDATE = os.environ.get("SYNTHBREW_UPDATE_GOLDEN") == "1"

# --- what cannot be deterministic ------------------------------------------------------------

PLACEHOLDER = "<normalised>"
# Families (as named on their "# HELP" line) whose sample values are replaced by PLACEHOLDER:
# measured from this process (memory, CPU, file descriptors, start time, the garbage
# collector), from DuckDB's buffer manager, or with a clock (time spent writing and scraping).
VARYING_VALUES = frozenset(
    {
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
        "synthbrew_exporter_duckdb_memory_bytes",
        "synthbrew_exporter_store_write_seconds_total",
        "synthbrew_exporter_scrape_collector_duration_seconds",
        "synthbrew_exporter_store_scrape_duration_seconds",
        "synthbrew_exporter_last_refresh_timestamp_seconds",
    }
)
# Families whose label values (not names) are replaced too: versions of the interpreter and of
# the exporter.
VARYING_LABEL_VALUES = frozenset({"python_info", "synthbrew_exporter_build_info"})
_LABEL_VALUE = re.compile(r'(\w+)="(?:[^"\\]|\\.)*"')


def normalise(text: str) -> str:
    """``text`` (the Prometheus text format) with the values of :data:`VARYING_VALUES` and the
    label values of :data:`VARYING_LABEL_VALUES` replaced by :data:`PLACEHOLDER`. Comment lines
    (HELP, TYPE), label names and every other family's samples are left byte for byte."""
    out = []
    family = None
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP "):
            family = line.split(" ", 3)[2]
        elif not line.startswith("#") and line.strip():
            if family in VARYING_LABEL_VALUES:
                line = _LABEL_VALUE.sub(rf'\1="{PLACEHOLDER}"', line)
            if family in VARYING_VALUES:
                series, _value = line.rstrip("\n").rsplit(" ", 1)
                line = f"{series} {PLACEHOLDER}\n"
        out.append(line)
    return "".join(out)


# --- a known store and known poll outcomes ---------------------------------------------------

# The clock of the billing collector: mid-November, half the month gone.
NOW = datetime(2026, 11, 16, tzinfo=UTC)
SHOP = UUID("00000000-0000-4000-8000-0000000000a1")
CRM = UUID("00000000-0000-4000-8000-0000000000a2")
ORDERS = UUID("00000000-0000-4000-8000-0000000000b1")
CUSTOMERS = UUID("00000000-0000-4000-8000-0000000000b2")
CONTACTS = UUID("00000000-0000-4000-8000-0000000000b3")
DEFAULT_KEY, CRM_KEY = "sb_api_golden_default", "sb_api_golden_crm"
CONFIG: dict[str, Any] = {
    "api": {"base_url": "http://synthbrew.invalid/api", "api_key": DEFAULT_KEY},
    "projects": [
        {
            "id": str(SHOP),
            "name": "shop",
            "sources": [
                {"id": str(ORDERS), "name": "orders"},
                {"id": str(CUSTOMERS), "name": "customers"},
            ],
        },
        {
            "id": str(CRM),
            "name": "crm",
            "api_key": CRM_KEY,
            "requests_per_minute": 30,
            "sources": [{"id": str(CONTACTS), "name": "contacts"}],
        },
    ],
    "billing": {
        "price_per_1000_rows": 0.5,
        "currency": "EUR",
        "included_rows": {"shop": 100, "crm": 1_000},
    },
}


def fixed_run(project: UUID, source: UUID, name: str, **fields: Any) -> GenerationEvent:
    """A run of ``source`` with an id fixed by ``name`` (see :func:`tests.factories.run`)."""
    return run(
        uuid5(NAMESPACE_URL, f"golden/{name}"),
        projectId=str(project),
        sourceId=str(source),
        **fields,
    )


def in_flight(status: str) -> dict[str, Any]:
    """The fields of a run still ``status`` (queued or active)."""
    started = None if status == "queued" else T0.isoformat()
    return {"status": status, "startedAt": started, "finishedAt": None, "durationMs": None}


def fill(store: Store) -> None:
    """Runs of both projects: both triggers, every status, durations spread over the buckets
    from under the first to past the last, billable rows either side of a month's start, a run
    corrected after it finished, one gone stale, and the oldest moved to history."""
    october = -4 * 24 * 60  # minutes before T0 (2026-11-01 12:00 UTC)
    orders = [
        fixed_run(SHOP, ORDERS, "o1", minutes=october, durationMs=50, billableRows=5),
        fixed_run(SHOP, ORDERS, "o2", minutes=october + 5, durationMs=300, billableRows=7),
        fixed_run(SHOP, ORDERS, "o3", durationMs=4_000, billableRows=40, totalInsertedRows=50),
        fixed_run(SHOP, ORDERS, "o4", minutes=1, durationMs=45_000, billableRows=60),
        fixed_run(SHOP, ORDERS, "o5", minutes=2, trigger="regenerate", durationMs=200_000),
        fixed_run(
            SHOP,
            ORDERS,
            "o6",
            minutes=3,
            status="failed",
            durationMs=1_500_000,
            billableRows=0,
            totalInsertedRows=3,
            errorMessage="boom",
        ),
        fixed_run(
            SHOP, ORDERS, "o7", minutes=4, status="cancelled", durationMs=None, billableRows=1
        ),
        fixed_run(SHOP, ORDERS, "o8", minutes=5, **in_flight("active")),
        fixed_run(SHOP, ORDERS, "o9", minutes=6, **in_flight("queued")),
    ]
    customers = [
        fixed_run(SHOP, CUSTOMERS, "c1", minutes=10, durationMs=9_000_000, billableRows=900),
        fixed_run(SHOP, CUSTOMERS, "c2", minutes=11, trigger="regenerate", durationMs=700),
        fixed_run(SHOP, CUSTOMERS, "c3", minutes=12, **in_flight("queued")),
    ]
    contacts = [
        fixed_run(CRM, CONTACTS, "k1", minutes=20, durationMs=2_000, billableRows=250),
        fixed_run(
            CRM, CONTACTS, "k2", minutes=21, status="failed", durationMs=90_000, billableRows=3
        ),
        fixed_run(CRM, CONTACTS, "k3", minutes=22, **in_flight("active")),
    ]
    store.ingest_page(SHOP, ORDERS, orders[:2], now=T0 + october * timedelta(minutes=1))
    store.ingest_page(SHOP, ORDERS, orders[2:], now=T0 + timedelta(hours=1))
    store.ingest_page(SHOP, CUSTOMERS, customers, now=T0 + timedelta(hours=1))
    store.ingest_page(CRM, CONTACTS, contacts, now=T0 + timedelta(hours=1))
    # o3 finished a success, then the API corrected it: failed, fewer billable rows.
    corrected = fixed_run(
        SHOP,
        ORDERS,
        "o3",
        status="failed",
        durationMs=4_000,
        billableRows=10,
        totalInsertedRows=50,
        updatedAt=(T0 + timedelta(hours=2)).isoformat(),
    )
    store.ingest_page(SHOP, ORDERS, [corrected], now=T0 + timedelta(hours=2))
    # k3 left a full window of its source more than an hour ago: stale.
    store.ingest_page(
        CRM, CONTACTS, contacts[:2], now=T0 + timedelta(hours=3), stale_after=timedelta(hours=1)
    )
    store.retire(T0 + timedelta(hours=4))


def record_polls(stats: ExporterStats, names: list[tuple[str, str]]) -> None:
    for project, source in names:
        stats.register_source(project, source)
    stats.record_poll(("shop", "orders"), ok=True, seconds=0.04, invalid=1)
    stats.record_poll(("shop", "orders"), ok=False, seconds=10.0, reason="timeout")
    stats.record_poll(("shop", "orders"), ok=True, seconds=0.2)
    stats.record_poll(("shop", "customers"), ok=True, seconds=1.5, possible_gap=True)
    stats.record_poll(("crm", "contacts"), ok=False, seconds=0.3, reason="store")
    stats.record_poll(("crm", "contacts"), ok=False, seconds=61.0, reason="http_5xx")


def api_budgets() -> Budgets:
    """``Config.budgets()`` of CONFIG, on a clock that does not move; some answers."""
    budgets = Budgets(None, DEFAULT_KEY, [("crm", CRM_KEY, 30)], clock=lambda: 1_000.0)
    for status in (200, 200, 200, None):
        budgets.for_key(DEFAULT_KEY).answered(status)
    budgets.for_key(CRM_KEY).answered(200)
    budgets.for_key(CRM_KEY).answered(429, retry_after=30)
    return budgets


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[CollectorRegistry]:
    """The registry the exporter serves (``service.metrics_registry``), over ``fill``'s store."""
    config = parse_config({**CONFIG, "database": {"path": str(tmp_path / "x.duckdb")}}, {})
    store = open_store(config)
    try:
        registry, stats = metrics_registry(config, store, Faults(), api_budgets(), lambda: NOW)
        all_targets = targets(config)
        store.sync_sources([(t.project.id, t.source.id, *t.labels) for t in all_targets])
        fill(store)
        record_polls(stats, [t.labels for t in all_targets])
        yield registry
    finally:
        store.close()


def served(registry: CollectorRegistry) -> str:
    """``registry`` as /metrics serves it: through the exposition cache, which adds a family of
    its own."""
    return ExpositionCache(registry, lambda: 1, refresh_seconds=60).snapshot.text.body.decode()


def test_metrics_exposition_matches_the_golden_file(registry: CollectorRegistry) -> None:
    rendered = normalise(served(registry)).encode()
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(rendered)
    golden = GOLDEN.read_bytes()
    if rendered != golden:
        diff = "".join(
            difflib.unified_diff(
                golden.decode().splitlines(keepends=True),
                rendered.decode().splitlines(keepends=True),
                str(GOLDEN),
                "rendered now",
            )
        )
        pytest.fail(
            "/metrics differs from tests/golden/metrics.txt; if the change is meant, regenerate"
            " it with SYNTHBREW_UPDATE_GOLDEN=1 and review its diff:\n" + diff,
            pytrace=False,
        )


def test_every_normalised_family_is_exposed(registry: CollectorRegistry) -> None:
    """A normalised family that is no longer exposed (renamed, say) would hide nothing: the
    lists above must name families that exist."""
    helped = {
        line.split(" ", 3)[2]
        for line in served(registry).splitlines()
        if line.startswith("# HELP ")
    }
    assert (VARYING_VALUES | VARYING_LABEL_VALUES) - helped == set()


def test_normalise_touches_only_the_named_families_values() -> None:
    text = (
        '# HELP synthbrew_exporter_build_info The version. "Always" 1.\n'
        "# TYPE synthbrew_exporter_build_info gauge\n"
        'synthbrew_exporter_build_info{version="1.2.3"} 1.0\n'
        "# HELP synthbrew_exporter_duckdb_memory_bytes Memory DuckDB holds.\n"
        "# TYPE synthbrew_exporter_duckdb_memory_bytes gauge\n"
        'synthbrew_exporter_duckdb_memory_bytes{tag="base table"} 262144.0\n'
        "# HELP synthbrew_exporter_store_runs Runs stored, by table.\n"
        "# TYPE synthbrew_exporter_store_runs gauge\n"
        'synthbrew_exporter_store_runs{table="live"} 7.0\n'
    )
    assert normalise(text).splitlines() == [
        '# HELP synthbrew_exporter_build_info The version. "Always" 1.',
        "# TYPE synthbrew_exporter_build_info gauge",
        'synthbrew_exporter_build_info{version="<normalised>"} 1.0',
        "# HELP synthbrew_exporter_duckdb_memory_bytes Memory DuckDB holds.",
        "# TYPE synthbrew_exporter_duckdb_memory_bytes gauge",
        'synthbrew_exporter_duckdb_memory_bytes{tag="base table"} <normalised>',
        "# HELP synthbrew_exporter_store_runs Runs stored, by table.",
        "# TYPE synthbrew_exporter_store_runs gauge",
        'synthbrew_exporter_store_runs{table="live"} 7.0',
    ]
