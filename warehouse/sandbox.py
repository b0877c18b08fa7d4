"""A read-only SQL executor over a warehouse's views, safe to put behind ``beamscope sql`` and a web page.

``SafeSQL(root).run(query)`` runs one SELECT against the views (``runs``, ``sentences``, …, the marts,
``raw.<table>``) and returns at most ``max_rows`` rows as a polars frame, or raises
:class:`~schemas.errors.QueryRefused` with a one-line message. Three independent layers keep user SQL in:

1. **Statement check.** ``extract_statements`` must find exactly one statement and its type must be
   SELECT (``DESCRIBE``/``SHOW``/``SUMMARIZE`` parse as SELECT and are allowed). Everything else —
   COPY, ATTACH, INSTALL/LOAD, SET/RESET/PRAGMA, DDL and DML, EXPORT/IMPORT, CALL, USE, CHECKPOINT,
   VACUUM, PREPARE, ``SELECT 1; DROP …`` — is refused before anything runs.
2. **Syntax-tree check.** The statement is parsed by DuckDB itself (``json_serialize_sql``) and its
   tree walked: every table reference must name a warehouse view or a CTE of the query (so
   ``FROM '/etc/passwd'`` replacement scans and Python objects of the caller are refused), table
   functions are limited to pure generators (``range``, ``generate_series``, ``unnest``,
   ``json_each``, ``json_tree``; so no ``read_*``, ``glob``, ``query``, ``duckdb_settings`` …, whatever
   the path), and functions that read configuration or state (``current_setting``, ``getvariable``,
   ``setseed`` …) are refused. Comments, case and whitespace make no difference: it is the parse tree.
3. **Engine lock-down.** The queries run on a private in-memory DuckDB whose views are created with
   absolute paths and which is then locked: ``allowed_directories`` = the warehouse's ``tables/``
   directory only, ``enable_external_access = false`` (no other file, no network, no ATTACH, no
   extension installs), ``autoinstall/autoload_known_extensions = false``,
   ``allow_community_extensions = false``, ``python_enable_replacements = false``, ``temp_directory =
   ''`` (nothing is ever written, large sorts fail instead of spilling), an optional ``memory_limit``,
   and finally ``lock_configuration = true`` so that no SET/RESET/PRAGMA can undo any of it. The
   constructor checks that the lock holds (a file outside ``tables/`` must be unreadable) and refuses
   to start otherwise.

Limits: a timer thread calls ``interrupt()`` on the query's connection after ``timeout_s`` seconds
("query timed out after N s"); at most ``max_rows`` rows come back (``max_rows + 1`` are fetched to
tell whether the result was ``truncated``). ``memory_limit`` bounds DuckDB's buffer manager only: a
single huge value (``repeat('x', 3000000000)``) is allocated outside it, so the dashboard runs user
SQL through ``warehouse.isolated.IsolatedSQL``: this sandbox in memory-capped worker processes.

Threads: one ``SafeSQL`` may be shared by every thread of a web server. It holds a pool of
``pool_size`` DuckDB cursors (connections to the same in-memory database, each with its own
interrupt), handed out one query at a time through a queue, so up to ``pool_size`` queries run at
once and a timer only ever interrupts its own query. A query that finds no free cursor within
``timeout_s`` is refused as busy. The pool also bounds how much CPU untrusted users can take.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from schemas.errors import QueryRefused, WarehouseError
from schemas.layout import is_remote, read_manifest, warehouse_root
from warehouse.marts import mart_statements
from warehouse.views import view_statements

#: Table functions that only generate values; every other one (read_*, glob, query, duckdb_*,
#: parquet_*, checkpoint, …) is refused in user SQL.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
#: Scalar functions that read the configuration, the environment or state, or change state.
DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "getvariable",
        "setseed",
        "setval",
        "nextval",
        "currval",
        "write_log",
        "json_execute_serialized_sql",
        "query",
        "query_table",
    }
)
MAX_QUERY_CHARS = 100_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHOW_SPECIAL = frozenset({'"tables"', "__show_tables_expanded"})  # SHOW TABLES, SHOW ALL TABLES


@dataclass(frozen=True)
class QueryResult:
    """At most ``max_rows`` rows; ``truncated`` when the query had more; wall time of ``run``."""

    df: pl.DataFrame
    truncated: bool
    elapsed_s: float


class SafeSQL:
    """Runs untrusted, read-only SQL against the views of the warehouse at ``root`` (see module doc)."""

    def __init__(
        self,
        root: str | Path,
        timeout_s: float = 5.0,
        max_rows: int = 10_000,
        *,
        pool_size: int = 4,
        memory_limit: str | None = "2GB",
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if max_rows < 0 or pool_size < 1:
            raise ValueError("max_rows must be >= 0 and pool_size >= 1")
        self.root = warehouse_root(root)
        read_manifest(self.root)
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self._con = duckdb.connect(":memory:")
        try:
            self._setup(memory_limit, pool_size)
        except BaseException:
            self._con.close()
            raise
        self._closed = False

    # -- setting up ---------------------------------------------------------------------------

    def _setup(self, memory_limit: str | None, pool_size: int) -> None:
        con = self._con
        remote = is_remote(self.root)
        tables = str(self.root / "tables") if remote else (self.root.resolve() / "tables").as_posix()
        if remote:  # S3 is read through s3fs (no httpfs extension is installed), before the lock
            con.register_filesystem(self.root.fs)
        for stmt in absolute_view_statements(self.root):
            con.execute(stmt)
        rows = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        self._views = frozenset((s.lower(), v.lower()) for s, v in rows)
        self.views = tuple(sorted(v for s, v in self._views if s == "main"))
        # Cursors get their connection-local settings now: after the lock nothing can be SET.
        self._pool: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
        for _ in range(pool_size):
            cur = con.cursor()
            cur.execute("SET enable_progress_bar = false")
            self._pool.put(cur)
        settings = [
            "SET python_enable_replacements = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET allow_community_extensions = false",
            "SET allow_persistent_secrets = false",
            "SET temp_directory = ''",
            f"SET allowed_directories = ['{_quote(tables)}/']",
            "SET enable_external_access = false",
        ]
        if memory_limit is not None:
            settings.insert(0, f"SET memory_limit = '{_quote(memory_limit)}'")
        for stmt in [*settings, "SET lock_configuration = true"]:
            con.execute(stmt)
        self._verify_lockdown()

    def _verify_lockdown(self) -> None:
        """Refuse to start unless the engine really is locked (a DuckDB upgrade may rename things)."""
        con = self._con
        expect = {
            "enable_external_access": False,
            "lock_configuration": True,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "python_enable_replacements": False,
        }
        for name, value in expect.items():
            got = con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0]
            if got != value:
                raise WarehouseError(f"SQL sandbox: DuckDB setting {name} is {got!r}, not {value!r}")
        root = self.root if is_remote(self.root) else self.root.resolve()
        manifest = _quote(str(root / "manifest.json"))
        for probe in (f"SELECT * FROM read_text('{manifest}')", "SET enable_external_access = true"):
            try:
                con.execute(probe).fetchall()
            except duckdb.Error:
                continue
            raise WarehouseError(f"SQL sandbox: DuckDB did not refuse {probe!r}; not starting")

    # -- running ------------------------------------------------------------------------------

    def run(self, query: str) -> QueryResult:
        """Run one read-only query; raise QueryRefused (one line) if it is refused, fails or times out."""
        start = time.perf_counter()
        if self._closed:
            raise QueryRefused("the SQL executor is closed", reason="error")
        try:
            cur = self._pool.get(timeout=self.timeout_s)
        except queue.Empty:
            raise QueryRefused(
                "busy: every query slot is in use; try again in a moment", reason="busy"
            ) from None
        try:
            sql = self._check(cur, query)
            df, truncated = self._execute(cur, sql)
        finally:
            if self._closed:
                with contextlib.suppress(duckdb.Error):
                    cur.close()
            else:
                self._pool.put(cur)
        return QueryResult(df, truncated, time.perf_counter() - start)

    def _check(self, cur: duckdb.DuckDBPyConnection, query: str) -> str:
        """Layers 1 and 2: one SELECT whose tree touches only views, CTEs and pure functions."""
        if not isinstance(query, str):
            raise QueryRefused("the query must be a string")
        if len(query) > MAX_QUERY_CHARS:
            raise QueryRefused(
                f"refused: query too long ({len(query):,} characters; at most {MAX_QUERY_CHARS:,})"
            )
        try:
            statements = cur.extract_statements(query)
        except duckdb.Error as e:
            raise QueryRefused(f"SQL error: {_first_line(e)}", reason="error") from None
        if not statements:
            raise QueryRefused("empty query")
        if len(statements) > 1:
            raise QueryRefused(f"refused: only one statement per query is allowed (got {len(statements)})")
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryRefused(f"refused: only SELECT queries are allowed (got {kind.name})")
        sql = _strip_tail(query)
        try:
            text = cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
            tree = json.loads(text)
        except RecursionError:
            raise QueryRefused("refused: query nested too deeply") from None
        except (duckdb.Error, ValueError) as e:
            raise QueryRefused(f"SQL error: {_first_line(e)}", reason="error") from None
        if tree.get("error"):
            raise QueryRefused(
                f"SQL error: {_first_line(tree.get('error_message', 'unparsable'))}", reason="error"
            )
        if len(tree.get("statements", [])) != 1:
            raise QueryRefused("refused: only one SELECT statement per query is allowed")
        self._check_tree(tree["statements"][0])
        return sql

    def _check_tree(self, tree: Any) -> None:
        nodes = list(_nodes(tree))
        ctes: set[str] = set()
        for node in nodes:
            cte_map = node.get("cte_map")
            for entry in cte_map.get("map", []) if isinstance(cte_map, dict) else []:
                name = str(entry.get("key", ""))
                if not _IDENTIFIER.match(name):
                    raise QueryRefused(f"refused: CTE name {name!r} must be a plain identifier")
                ctes.add(name.lower())
        for node in nodes:
            kind = node.get("type")
            if kind == "BASE_TABLE":
                self._check_table(node, ctes)
            elif kind == "TABLE_FUNCTION":
                function = node.get("function") or {}
                name = str(function.get("function_name", "")).lower()
                if name not in ALLOWED_TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
                    raise QueryRefused(
                        f"refused: table function {name}() is not allowed; query the warehouse views "
                        f"(SHOW TABLES lists them)"
                    )
            elif kind == "SHOW_REF":
                if node.get("query") is None and node.get("table_name") not in _SHOW_SPECIAL:
                    raise QueryRefused(
                        "refused: only SHOW TABLES, SHOW ALL TABLES, DESCRIBE and SUMMARIZE are allowed"
                    )
            elif kind == "COLUMN_DATA":
                raise QueryRefused("refused: query refers to data outside the warehouse")
            if node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if name in DENIED_FUNCTIONS:
                    raise QueryRefused(f"refused: function {name}() is not allowed")

    def _check_table(self, node: dict[str, Any], ctes: set[str]) -> None:
        catalog = str(node.get("catalog_name") or "").lower()
        schema = str(node.get("schema_name") or "").lower()
        name = str(node.get("table_name") or "")
        if not catalog and not schema and name.lower() in ctes:
            return
        if catalog in ("", "memory") and (schema or "main", name.lower()) in self._views:
            return
        shown = ".".join(p for p in (catalog, schema, name) if p)
        raise QueryRefused(f"refused: {shown!r} is not a warehouse view (SHOW TABLES lists them)")

    def _execute(self, cur: duckdb.DuckDBPyConnection, sql: str) -> tuple[pl.DataFrame, bool]:
        """Layer 3 runs it: under the locked engine, with a timer that interrupts this cursor only."""
        fired = threading.Event()

        def interrupt() -> None:
            fired.set()
            cur.interrupt()

        timer = threading.Timer(self.timeout_s, interrupt)
        timer.daemon = True
        timer.start()
        try:
            df = cur.sql(sql).limit(self.max_rows + 1).pl()
        except duckdb.InterruptException:
            if fired.is_set():
                raise QueryRefused(f"query timed out after {self.timeout_s:g} s", reason="timeout") from None
            raise QueryRefused("query interrupted", reason="error") from None
        except duckdb.PermissionException:
            raise QueryRefused("refused: file, network and configuration access is disabled") from None
        except duckdb.Error as e:
            raise QueryRefused(f"SQL error: {_first_line(e)}", reason="error") from None
        except Exception as e:  # result conversion (polars/arrow); never a traceback for a user
            raise QueryRefused(f"SQL error: {type(e).__name__}: {_first_line(e)}", reason="error") from None
        finally:
            timer.cancel()
            timer.join()
        truncated = df.height > self.max_rows
        return (df.head(self.max_rows) if truncated else df), truncated

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        while True:
            try:
                cur = self._pool.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(duckdb.Error):
                cur.close()
        self._con.close()

    def __enter__(self) -> SafeSQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def absolute_view_statements(root: Path) -> list[str]:
    """The views of ``warehouse.views`` and the marts, reading the tables by absolute path.

    DuckDB checks a relative glob against ``allowed_directories`` *before* resolving it (relative to
    the process's working directory), so a locked connection could only read absolute paths.
    """
    out = view_statements(root) + mart_statements()
    for stmt in out:
        if "'tables/" in stmt:
            raise WarehouseError(f"SQL sandbox: a view still reads a relative path: {stmt[:80]}")
    return out


def _nodes(tree: Any) -> Any:
    """Every dict in a JSON tree, iteratively (no recursion limit)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _strip_tail(sql: str) -> str:
    """``sql`` without trailing semicolons and comments (a relation cannot wrap ``SELECT 1; -- x``)."""
    tokens = duckdb.tokenize(sql)
    cut = len(sql)
    for pos, kind in reversed(tokens):
        piece = sql[pos:cut].strip()
        if kind == duckdb.token_type.comment or (piece and set(piece) <= {";"}):
            cut = pos
        else:
            break
    return sql[:cut].rstrip().rstrip(";")


def _first_line(e: object) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _quote(s: str) -> str:
    return s.replace("'", "''")
