"""Ad-hoc SQL over the store: one read-only query, contained and bounded, whatever is typed.

Containment is DuckDB's own, in layers:

- its statement parser (``extract_statements``): exactly one statement, and a ``SELECT``
  (``WITH``, ``VALUES``, ``FROM t``, ``DESCRIBE`` and ``SHOW`` are SELECTs too). ``COPY``,
  ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA``, ``CALL``, DDL and DML never run;
- its parse tree (``json_serialize_sql``): every table a query names must be a table or view of
  the store (or one of the query's own CTEs), which rules out reading a file by naming it
  (``FROM '/etc/passwd.csv'``) and DuckDB's Python scans of local variables; table functions are
  an allow-list (``range``, ``unnest``, the ``duckdb_*`` catalog), so ``read_csv``,
  ``read_text``, ``glob``, ``query`` and friends are refused; a few scalar functions with side
  effects (``nextval``) are refused;
- a read-only transaction: DuckDB itself refuses any write that got this far;
- run from the CLI on a free file, a separate read-only instance with external access disabled
  and its configuration locked.

Bounds: ``timeout_seconds`` interrupts the query (DuckDB's ``interrupt``), at most ``max_rows``
rows are returned and the result says when it cut, and it runs inside ``database.memory_limit``
on a reader cursor, beside the writer, so polls and /metrics keep their schedule.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from exporter.errors import InvalidInput
from exporter.reports import ReportResult
from exporter.store.db import connect, first_line

# Table functions a query may use: generators, DuckDB's catalog and the store's own table
# macros (exporter.store.schema), nothing that reads a file.
TABLE_FUNCTIONS = frozenset(
    {
        "finished_per_day",
        "percentiles_by_source",
        "range",
        "generate_series",
        "unnest",
        "duckdb_tables",
        "duckdb_views",
        "duckdb_columns",
        "duckdb_schemas",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_constraints",
        "duckdb_indexes",
        "pragma_table_info",
        "pragma_show",
        "summary",
    }
)
# Scalar functions that change state.
REFUSED_FUNCTIONS = frozenset({"nextval", "currval", "setval", "setseed"})
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog"})


class SqlError(InvalidInput):
    """A query that is refused, fails or runs too long: the message says which and why."""


def check(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise SqlError unless ``sql`` is one SELECT over the store's own tables and views."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(f"not valid SQL: {first_line(exc)}") from None
    if len(statements) != 1:
        raise SqlError(f"one statement at a time ({len(statements)} given)")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SqlError(f"only SELECT queries are allowed, not {kind.name}")
    tree = json.loads(cur.execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchall()[0][0])
    if tree.get("error"):
        raise SqlError(f"cannot analyse the query: {tree.get('error_message', '')}")
    relations = {name.lower() for (name,) in cur.execute(_RELATIONS).fetchall()}
    ctes = {name.lower() for name in _cte_names(tree)}
    for node in _nodes(tree):
        _check_node(node, relations | ctes)


_RELATIONS = """
SELECT table_name FROM duckdb_tables() WHERE NOT internal
UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal
"""


def _check_node(node: dict[str, Any], relations: set[str]) -> None:
    kind = node.get("type")
    if kind == "TABLE_FUNCTION":
        name = str(node.get("function", {}).get("function_name", "")).lower()
        if name not in TABLE_FUNCTIONS:
            raise SqlError(
                f"table function {name}() is not allowed: queries read the store's tables and"
                " views only"
            )
    elif kind == "BASE_TABLE":
        schema = str(node.get("schema_name", "")).lower()
        name = str(node.get("table_name", "")).lower()
        if schema not in _SYSTEM_SCHEMAS and name not in relations:
            raise SqlError(
                f"no table or view named {node.get('table_name')!r} in the store"
                " (files and other databases cannot be read)"
            )
        if node.get("catalog_name") not in ("", None) and schema not in _SYSTEM_SCHEMAS:
            raise SqlError("other databases cannot be read")
    elif node.get("class") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in REFUSED_FUNCTIONS:
            raise SqlError(f"function {name}() is not allowed: it changes state")


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in the parse tree, depth first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)


def _cte_names(tree: Any) -> Iterator[str]:
    for node in _nodes(tree):
        for entry in node.get("cte_map", {}).get("map", []) if "cte_map" in node else []:
            yield str(entry.get("key", ""))


def run_sql(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int | None = None,
    timeout_seconds: float | None = None,
) -> ReportResult:
    """The query's rows, at most ``max_rows`` (``truncated`` when there were more), read in a
    read-only transaction, interrupted after ``timeout_seconds``; None: no bound."""
    check(cur, sql)
    timer = threading.Timer(timeout_seconds, cur.interrupt) if timeout_seconds else None
    cur.execute("BEGIN TRANSACTION READ ONLY")
    if timer is not None:
        timer.start()
    try:
        result = cur.execute(sql)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall() if max_rows is None else result.fetchmany(max_rows + 1)
    except duckdb.InterruptException:
        raise SqlError(
            f"the query ran longer than {timeout_seconds:g}s (reports.sql_timeout_seconds)"
            " and was stopped"
        ) from None
    except duckdb.Error as exc:
        raise SqlError(f"the query failed: {first_line(exc)}") from None
    finally:
        if timer is not None:
            timer.cancel()
        cur.execute("ROLLBACK")
    kept = rows if max_rows is None else rows[:max_rows]
    return ReportResult(columns, kept, truncated=len(kept) < len(rows))


def open_read_only(path: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """A read-only instance of a database no exporter holds, that can read nothing but it:
    external access disabled and its configuration locked (DuckDB enforces both)."""
    conn = connect(
        path,
        True,
        {
            "memory_limit": memory_limit,
            "threads": threads,
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    conn.execute("SET lock_configuration = true")
    return conn
