"""Vector tables (LanceDB): listing them and building their ANN indexes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import lancedb
from tqdm import tqdm

from schemas import VECTOR_TABLES
from schemas.layout import locked, open_vectors, read_manifest, vector_table, vectors_dir, write_manifest

DEFAULT_MIN_ROWS = 100_000  # below this, exact search is fast enough and no index is built


@dataclass(frozen=True)
class IndexReport:
    table: str
    rows: int
    built: bool
    seconds: float
    params: dict[str, int | str]


def index_params(rows: int, dim: int) -> dict[str, int | str]:
    """IVF-PQ sized to the table: ~sqrt(rows) partitions, 8-dimensional sub-vectors."""
    sub = next((s for s in (dim // 8, dim // 4, dim // 2) if s >= 1 and dim % s == 0), 1)
    return {
        "index_type": "IVF_PQ",
        "metric": "cosine",
        "num_partitions": max(1, int(math.sqrt(rows))),
        "num_sub_vectors": sub,
    }


def build_indexes(
    root: Path, runs: list[str], min_rows: int = DEFAULT_MIN_ROWS, progress: bool = True
) -> list[IndexReport]:
    """Build (or rebuild) the ANN index of every vector table of ``runs`` that is big enough."""
    db = lancedb.connect(str(vectors_dir(root)))
    names = [vector_table(kind, run) for run in runs for kind in VECTOR_TABLES]
    reports = []
    for name in tqdm(names, desc="index", unit="table", disable=not progress):
        tbl = open_vectors(db, name)
        if tbl is None:
            continue
        rows = tbl.count_rows()
        if rows < min_rows:
            reports.append(IndexReport(name, rows, False, 0.0, {"index_type": "none (exact search)"}))
            continue
        params = index_params(rows, tbl.schema.field("vector").type.list_size)
        start = time.perf_counter()
        tbl.create_index(vector_column_name="vector", replace=True, **params)
        reports.append(IndexReport(name, rows, True, time.perf_counter() - start, params))
    with locked(root):
        manifest = read_manifest(root)
        indexes = manifest.setdefault("indexes", {})
        for r in reports:
            indexes[r.table] = {"rows": r.rows, "built": r.built, **r.params}
        write_manifest(root, manifest)
    return reports
