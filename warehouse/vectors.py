"""Vector tables (LanceDB): their indexes, nearest-state search and key look-ups.

Index choice (``python -m bench.ann``: traced dates decoder states, 128-d, 2 cores): ``IVF_SQ``
(8-bit scalar quantisation, ~sqrt(rows) IVF partitions) searched with ``nprobes`` max(20, 2% of
the partitions) and ``refine_factor`` 5 (the 50 best candidates re-ranked by exact cosine
distance): recall@10 0.999 and p50 ~10 ms a query at 2.64M states. ``IVF_PQ`` (16 sub-vectors)
builds as fast and is 6x smaller, but ranks candidates worse (recall before re-ranking 0.76
against 0.91; 0.99 at refine 5), so it needs twice the exact re-reads; ``IVF_HNSW_SQ`` built 16x
slower at 440k states for no gain in recall or latency. Filtered searches (``decoding = 'ref'``,
``layer = n``) need a scalar index on the filtered column: without one, every query scans that
column over the whole table to build its pre-filter (25-30 ms at 440k rows, ~100 ms at 2.64M),
so ``build_indexes`` adds BITMAP indexes on those columns and a BTREE on ``sent_id`` for key
look-ups (``fetch``: ~4 ms instead of ~85 ms at 2.64M).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import Bitmap, BTree, IvfSq
from tqdm import tqdm

from schemas import VECTOR_TABLES
from schemas.layout import locked, open_vectors, read_manifest, vector_table, vectors_dir, write_manifest

DEFAULT_MIN_ROWS = 100_000  # below this, exact search is fast enough and no index is built
VECTOR = "vector"
# Scalar indexes of the columns the dashboard filters and looks up by (those a table has).
SCALAR_INDEXES = {"sent_id": "BTREE", "decoding": "BITMAP", "layer": "BITMAP"}
MIN_NPROBES = 20
# Candidates re-ranked by exact distance, per result, for the quantised index kinds measured
# (IVF_PQ: the index of warehouses indexed before IVF_SQ); IVF_FLAT keeps exact vectors.
REFINE_FACTOR = {"IVF_SQ": 5, "IVF_PQ": 10, "IVF_RQ": 5}


@dataclass(frozen=True)
class IndexReport:
    table: str
    rows: int
    built: bool
    seconds: float
    params: dict[str, int | str]


def num_partitions(rows: int) -> int:
    """IVF partitions for ``rows`` vectors: ~sqrt(rows), i.e. ~sqrt(rows) vectors a partition."""
    return max(1, int(math.sqrt(rows)))


def index_params(rows: int) -> dict[str, int | str]:
    """The vector index of a table of ``rows`` vectors (see the module doc)."""
    return {"index_type": "IVF_SQ", "metric": "cosine", "num_partitions": num_partitions(rows)}


def search_params(index_type: str, indexed_rows: int) -> dict[str, int]:
    """Query-time parameters for an index of ``index_type`` over ``indexed_rows`` vectors.

    ``nprobes``: partitions searched by every query, 20 or 2% of them on bigger tables (more
    are searched when a narrow ``where`` leaves fewer than k rows in those); ``refine_factor``:
    see ``REFINE_FACTOR``. Chosen for recall@10 >= 0.95 against exact search (``bench.ann``).
    """
    params: dict[str, int] = {}
    if index_type.startswith("IVF"):
        partitions = num_partitions(indexed_rows)
        params["nprobes"] = min(partitions, max(MIN_NPROBES, math.ceil(0.02 * partitions)))
    if index_type in REFINE_FACTOR:
        params["refine_factor"] = REFINE_FACTOR[index_type]
    return params


def vector_index(table: lancedb.table.Table) -> tuple[str, int] | None:
    """The type ('IVF_SQ', ...) and indexed rows of ``table``'s vector index, if it has one."""
    for ix in table.list_indices():
        if ix.columns == [VECTOR]:
            kind = "".join(f"_{c}" if c.isupper() else c for c in ix.index_type).lstrip("_").upper()
            return kind, ix.num_indexed_rows
    return None


def nearest(
    table: lancedb.table.Table,
    vectors: np.ndarray,
    k: int = 10,
    where: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """The ``k`` nearest rows (cosine) of ``table`` to each of ``vectors``, nearest first.

    Args:
        table: a vector table (``encoder_states__<run>`` or ``decoder_states__<run>``).
        vectors: [n, d] queries (a single [d] vector is one query).
        k: rows per query (fewer when fewer rows match ``where``).
        where: SQL filter applied before the search, e.g. ``"decoding = 'ref'"``.
        columns: columns to return; default every column but ``vector``.

    Returns:
        ``query_index`` (int32, 0..n-1), ``columns``, ``_distance`` (exact cosine distance),
        sorted by ``query_index`` then ``_distance``. Uses the table's ANN index when it has one
        (with ``search_params``), else exact search.
    """
    queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    dim = table.schema.field(VECTOR).type.list_size
    if queries.ndim != 2 or len(queries) == 0 or queries.shape[1] != dim:
        raise ValueError(f"vectors must be [n >= 1, {dim}], got {list(np.shape(vectors))}")
    cols = [f.name for f in table.schema if f.name != VECTOR] if columns is None else list(columns)
    q = list(queries) if len(queries) > 1 else queries[0]
    query = table.search(q, vector_column_name=VECTOR).distance_type("cosine").limit(k)
    query = query.select([*cols, "_distance"])
    if where:
        query = query.where(where, prefilter=True)
    index = vector_index(table)
    if index is None:
        query = query.bypass_vector_index()
    else:
        params = search_params(*index)
        if "nprobes" in params:  # no maximum: a narrow filter searches on until it has k rows
            query = query.minimum_nprobes(params["nprobes"]).maximum_nprobes(0)
        if "refine_factor" in params:
            query = query.refine_factor(params["refine_factor"])
    out = query.to_arrow()
    qi = (
        out["query_index"].cast(pa.int32())
        if "query_index" in out.column_names
        else pa.array(np.zeros(out.num_rows, dtype=np.int32))
    )
    out = pa.table({"query_index": qi, **{c: out[c] for c in [*cols, "_distance"]}})
    return out.sort_by([("query_index", "ascending"), ("_distance", "ascending")])


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
    """Build (or rebuild) the ANN and scalar indexes of every vector table of ``runs`` that is big enough."""
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
        params = index_params(rows)
        start = time.perf_counter()
        tbl.create_index(
            VECTOR,
            config=IvfSq(distance_type=params["metric"], num_partitions=params["num_partitions"]),
            replace=True,
        )
        scalar = {c: kind for c, kind in SCALAR_INDEXES.items() if c in tbl.schema.names}
        for column, kind in scalar.items():
            tbl.create_index(column, config=BTree() if kind == "BTREE" else Bitmap(), replace=True)
        search = search_params(str(params["index_type"]), rows)
        params = {
            **params,
            **{f"search_{k}": v for k, v in search.items()},
            "scalar_indexes": ", ".join(f"{c} {kind}" for c, kind in scalar.items()),
        }
        reports.append(IndexReport(name, rows, True, time.perf_counter() - start, params))
    with locked(root):
        manifest = read_manifest(root)
        indexes = manifest.setdefault("indexes", {})
        for r in reports:
            indexes[r.table] = {"rows": r.rows, "built": r.built, **r.params}
        write_manifest(root, manifest)
    return reports
