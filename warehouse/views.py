"""DuckDB views over a warehouse's Parquet tables.

``raw.<table>`` reads every part; the public ``<table>`` views show only runs whose ``runs``
row says 'complete', so readers never see a run that is still being written.
In ``beamscope.duckdb`` the paths are relative to the warehouse (open it from inside the
directory); connections beamscope opens itself use absolute paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas import TABLES, WarehouseError
from schemas.layout import check_parts, is_remote, read_manifest, table_glob
from warehouse.marts import mart_statements

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.int16(): "SMALLINT",
    pa.float16(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
}


def sql_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t):
        return sql_type(t.value_type) + "[]"
    return _SQL_TYPES[t]


def _empty_select(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {sql_type(f.type)}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def view_statements(root: Path, relative: bool = False) -> list[str]:
    """CREATE VIEW statements for every table (empty, typed views for tables with no parts).

    Raises if a complete run lacks part files (a table or part deleted by hand)."""
    check_parts(root, read_manifest(root))
    stmts = ["CREATE SCHEMA IF NOT EXISTS raw"]
    for name, schema in TABLES.items():
        glob = table_glob(name)
        has_parts = any((root / "tables" / name).glob("*/*.parquet"))
        source = (
            f"SELECT * FROM read_parquet('{_quote(glob if relative else str(_absolute(root) / glob))}', "
            "hive_partitioning = false, "
            "union_by_name = true)"
            if has_parts
            else _empty_select(schema)
        )
        stmts.append(f"CREATE OR REPLACE VIEW raw.{name} AS {source}")
    stmts.append("CREATE OR REPLACE VIEW runs AS SELECT * FROM raw.runs WHERE status = 'complete'")
    for name in TABLES:
        if name != "runs":
            stmts.append(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM raw.{name} "
                "WHERE run_id IN (SELECT run_id FROM runs)"
            )
    stmts.append(TOPK_VIEW)
    return stmts


# the top-k predictions of every hypothesis step, one row each, with their tokens
TOPK_VIEW = """
CREATE OR REPLACE VIEW topk AS
SELECT k.run_id, k.sent_id, k.step, k.rank, k.token_id, v.token, k.prob
FROM (SELECT run_id, sent_id, step, generate_subscripts(topk_token_ids, 1) AS rank,
             unnest(topk_token_ids) AS token_id, unnest(topk_probs) AS prob FROM target_steps) k
LEFT JOIN vocabulary v ON v.run_id = k.run_id AND v.side = 'tgt' AND v.token_id = k.token_id
"""


def create_views(con: duckdb.DuckDBPyConnection, root: Path, relative: bool = False) -> None:
    """Create the table views and marts; ``relative`` paths resolve against the working directory."""
    if relative:
        con.execute(f"SET file_search_path = '{_quote(str(root.resolve()))}'")
    for stmt in view_statements(root, relative) + mart_statements():
        try:
            con.execute(stmt)
        except duckdb.Error as e:
            raise damaged_part_error(e) or e from None
    if relative:
        con.execute("RESET file_search_path")


_PART_FILE = re.compile(r"\s*'([^']*\.parquet)'")


def damaged_part_error(e: duckdb.Error) -> WarehouseError | None:
    """A one-line error naming the part file DuckDB could not read, or None if ``e`` names none."""
    first = str(e).splitlines()[0] if str(e) else ""
    found = _PART_FILE.search(first)
    if found is None:
        return None
    path = found.group(1)
    run = re.search(r"/run=([^/]+)/", path)
    detail = _PART_FILE.sub("", first.split(": ", 1)[-1])
    return WarehouseError(
        f"damaged Parquet part ({detail}); restore it from a copy, or delete run "
        f"{run.group(1) if run else '?'}'s directories and trace it again",
        path=path,
    )


def _absolute(root: Path) -> Path:
    return root if is_remote(root) else root.resolve()


def _quote(s: str) -> str:
    return s.replace("'", "''")
