"""Vector tables (LanceDB): their scalar indexes and key look-ups.

LanceDB stores the states; the nearest-state search is the neighbour engine's
(``pipeline.neighbours``: a faiss bank per training run), so no LanceDB vector index is built.
Look-ups by key (``fetch``: a sentence's states, a neighbour's row) need a scalar index on the
filtered columns: without one, every query scans those columns over the whole table (~85 ms at
2.64M rows, ~4 ms with a BTREE on ``sent_id``); ``build_indexes`` adds a BTREE on ``sent_id``
and BITMAP indexes on ``decoding`` and ``layer``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lancedb
import pyarrow as pa
from lancedb.index import Bitmap, BTree
from tqdm import tqdm

from schemas import VECTOR_TABLES
from schemas.layout import locked, open_vectors, read_manifest, vector_table, vectors_dir, write_manifest

DEFAULT_MIN_ROWS = 100_000  # below this, a scan is fast enough and no index is built
# Scalar indexes of the columns the dashboard filters and looks up by (those a table has).
SCALAR_INDEXES = {"sent_id": "BTREE", "decoding": "BITMAP", "layer": "BITMAP"}


@dataclass(frozen=True)
class IndexReport:
    table: str
    rows: int
    built: bool
    seconds: float
    params: dict[str, int | str]


def fetch(table: lancedb.table.Table, where: str, columns: list[str] | None = None) -> pa.Table:
    """Rows of ``table`` matching ``where`` (e.g. ``"sent_id = 5 AND decoding = 'hyp'"``).

    Fast on big tables once ``build_indexes`` has indexed ``sent_id`` (BTREE).
    """
    query = table.search().where(where).limit(None)
    if columns is not None:
        query = query.select(list(columns))
    return query.to_arrow()


def build_indexes(
    root: Path, runs: list[str], min_rows: int = DEFAULT_MIN_ROWS, progress: bool = True
) -> list[IndexReport]:
    """Build (or rebuild) the scalar indexes of every vector table of ``runs`` that is big enough."""
    db = lancedb.connect(str(vectors_dir(root)))
    names = [vector_table(kind, run) for run in runs for kind in VECTOR_TABLES]
    reports = []
    for name in tqdm(names, desc="index", unit="table", disable=not progress):
        tbl = open_vectors(db, name)
        if tbl is None:
            continue
        rows = tbl.count_rows()
        if rows < min_rows:
            reports.append(IndexReport(name, rows, False, 0.0, {"scalar_indexes": "none (scans)"}))
            continue
        start = time.perf_counter()
        scalar = {c: kind for c, kind in SCALAR_INDEXES.items() if c in tbl.schema.names}
        for column, kind in scalar.items():
            tbl.create_index(column, config=BTree() if kind == "BTREE" else Bitmap(), replace=True)
        params = {"scalar_indexes": ", ".join(f"{c} {kind}" for c, kind in scalar.items())}
        reports.append(IndexReport(name, rows, True, time.perf_counter() - start, params))
    with locked(root):
        manifest = read_manifest(root)
        indexes = manifest.setdefault("indexes", {})
        for r in reports:
            indexes[r.table] = {"rows": r.rows, "built": r.built, **r.params}
        write_manifest(root, manifest)
    return reports
