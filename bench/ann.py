"""Nearest training states (``warehouse.vectors.nearest``) at demo size and at 2.5M decoder states.

Two tables of real decoder states (hyp + ref) of a dates model:

(a) the demo warehouse's training run (``dates-train-20000``, 440,000 rows), queried with
    states of the demo's test run;
(b) ``task:dates:train:120000`` traced with the bench model (``bench.common.dates_model``) into
    ``.beamscope/bench/ann-2.5m/<model hash>/`` (2,640,000 rows; traced once, ~8 min on 2 cores,
    reused later; its encoder states are dropped), queried with states of a
    ``task:dates:test:1000`` run traced beside it.

For each, on a copy under ``.beamscope/bench/ann-work/`` (removed afterwards): ``build_indexes``
(vector + scalar indexes, timed), the indexes' size on disk, and over ``QUERIES`` test decoder
states (seeded sample, hyp and ref) searched as the dashboard does (``k = 10``, ``where decoding =
'ref'``): recall@10 against exact cosine search (numpy, in chunks) -- plain, and tie-aware (a
returned state counts when its exact distance is <= the exact 10th distance + 1e-6: the dates
states have many near-duplicates) -- single-query latency (one query at a time, after a warm-up
pass over all queries; p50, p95), batch throughput (all queries in one call, best of 2) and, to
show what the scalar indexes are for, the p50 of the same filtered search with the ``decoding``
index dropped, and of ``fetch`` (one training sentence's 'ref' states) with and without the
``sent_id`` index.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import Bitmap, BTree

from bench.common import CACHE, dates_model
from pipeline.beam import DecodeConfig
from pipeline.models import load_model, resolve_device
from pipeline.trace import TraceConfig, trace
from schemas.layout import new_manifest, open_vectors, vector_table, vectors_dir, write_manifest
from warehouse.vectors import IndexReport, build_indexes, fetch, nearest

DEMO = Path("demo/warehouse")
DEMO_TRAIN = "dates-transformer.dates-train-20000.train"
DEMO_TEST = "dates-transformer.dates-test-2000.test"
BIG_TRAIN = "task:dates:train:120000"  # ~22 decoder states a sentence (hyp + ref): 2.64M
BIG_TEST = "task:dates:test:1000"
DECODING = DecodeConfig(beam=5, max_len=20)
QUERIES = 500
K = 10
WHERE = "decoding = 'ref'"
COLUMNS = ["sent_id", "step", "token", "next_token"]
TIE_EPS = 1e-6
TARGETS = {"recall": 0.95, "p50_ms": 20.0}
NO_SCALAR_QUERIES = 50
WORK = CACHE / "ann-work"  # indexed copies, removed after the run


def demo_table() -> tuple[lancedb.table.Table, IndexReport, lancedb.table.Table] | None:
    """(a): a copy of the demo's training decoder states, indexed, and the demo's test states."""
    src = vectors_dir(DEMO)
    test = vector_table("decoder_states", DEMO_TEST)
    if not (src / f"{vector_table('decoder_states', DEMO_TRAIN)}.lance").is_dir():
        return None
    if not (src / f"{test}.lance").is_dir():
        return None
    return *_indexed_copy(DEMO, DEMO_TRAIN, WORK / "demo"), lancedb.connect(str(src)).open_table(test)


def big_table(device_name: str) -> tuple[lancedb.table.Table, IndexReport, lancedb.table.Table]:
    """(b): ``BIG_TRAIN`` and ``BIG_TEST`` traced with the bench model (cached by model hash)."""
    device = resolve_device(device_name)
    model_dir = dates_model(device)
    root = CACHE / "ann-2.5m" / load_model(model_dir, device).hash
    runs = []
    for corpus in (BIG_TRAIN, BIG_TEST):
        cfg = TraceConfig(
            model=str(model_dir),
            corpus=corpus,
            warehouse=str(root),
            decoding=DECODING,
            batch_size=128,
            part_size=4096,
            device=device_name,
            neighbours_run=None,  # no neighbour blame: only the vectors are used here
        )
        runs.append(trace(cfg).run_id)
    db = lancedb.connect(str(vectors_dir(root)))
    for run in runs:  # only decoder states are searched here: 0.9 GB less on disk
        if open_vectors(db, vector_table("encoder_states", run)) is not None:
            db.drop_table(vector_table("encoder_states", run))
    test = db.open_table(vector_table("decoder_states", runs[1]))
    return *_indexed_copy(root, runs[0], WORK / "2.5m"), test


def _indexed_copy(src: Path, run: str, root: Path) -> tuple[lancedb.table.Table, IndexReport]:
    """The run's decoder table copied from warehouse ``src`` into ``root``, and ``build_indexes``' report.

    Indexes are built on a copy so that every run times a fresh build and the sources stay as
    they are (the demo) or as traced (the cache).
    """
    name = vector_table("decoder_states", run)
    shutil.rmtree(root, ignore_errors=True)
    write_manifest(root, new_manifest())
    shutil.copytree(vectors_dir(src) / f"{name}.lance", vectors_dir(root) / f"{name}.lance")
    (built,) = [r for r in build_indexes(root, [run], min_rows=1, progress=False) if r.table == name]
    return lancedb.connect(str(vectors_dir(root))).open_table(name), built


def _vectors(table: pa.Table) -> np.ndarray:
    dim = table.schema.field("vector").type.list_size
    return table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)


def _keys(table: pa.Table) -> np.ndarray:
    return (table["sent_id"].to_numpy().astype(np.int64) << 16) | table["step"].to_numpy()


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cosine distances [n, k] of the exact k nearest of ``base`` (both L2-normalised)."""
    chunk = max(1, 2**25 // len(base))  # <= 128 MB of similarities at a time
    rows, dists = [], []
    for s in range(0, len(queries), chunk):
        d = 1 - queries[s : s + chunk] @ base.T
        top = np.argpartition(d, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, top, 1), axis=1)
        rows.append(np.take_along_axis(top, order, 1))
        dists.append(np.take_along_axis(d, rows[-1], 1))
    return np.concatenate(rows), np.concatenate(dists)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(table: lancedb.table.Table, built: IndexReport, test: lancedb.table.Table) -> dict[str, Any]:
    """Figures of ``nearest`` over ``table`` (indexed) for ``QUERIES`` states of ``test``."""
    ref = table.search().where(WHERE).select(["sent_id", "step", "vector"]).limit(None).to_arrow()
    base = _normalise(_vectors(ref))
    row_of = {key: i for i, key in enumerate(_keys(ref))}
    pool = test.search().select(["vector"]).limit(None).to_arrow()
    pick = np.random.default_rng(0).choice(pool.num_rows, min(QUERIES, pool.num_rows), replace=False)
    queries = _vectors(pool)[np.sort(pick)]
    exact_rows, exact_dist = exact_top(base, _normalise(queries), K)

    def search(q: np.ndarray) -> pa.Table:
        return nearest(table, q, k=K, where=WHERE, columns=COLUMNS)

    plain = tied = 0.0
    for i, q in enumerate(queries):  # the warm-up pass
        got = np.array([row_of[key] for key in _keys(search(q[None]))])
        plain += len(set(got) & set(exact_rows[i])) / K
        tied += np.sum(1 - base[got] @ _normalise(q[None])[0] <= exact_dist[i, -1] + TIE_EPS) / K
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - start)
    batch = min(_timed(lambda: search(queries)) for _ in range(2))
    indexes = table.list_indices()
    vector_bytes = sum(ix.size_bytes for ix in indexes if ix.columns == ["vector"])
    scalar_bytes = sum(ix.size_bytes for ix in indexes if ix.columns != ["vector"])
    decoding = next(ix.name for ix in indexes if ix.columns == ["decoding"])
    table.drop_index(decoding)
    no_scalar = [_timed(lambda q=q: search(q[None])) for q in queries[:NO_SCALAR_QUERIES]]
    table.create_index("decoding", config=Bitmap(), replace=True)
    look_ups = _fetch_times(table)
    return {
        "rows": table.count_rows(),
        "ref_rows": len(base),
        "queries": len(queries),
        "index": built.params,
        "build_s": built.seconds,
        "vector_index_mb": vector_bytes / 1e6,
        "scalar_indexes_mb": scalar_bytes / 1e6,
        "recall": plain / len(queries),
        "recall_tie_aware": tied / len(queries),
        "p50_ms": 1e3 * statistics.median(times),
        "p95_ms": 1e3 * float(np.percentile(times, 95)),
        "batch_queries_per_s": len(queries) / batch,
        "p50_ms_without_scalar_index": 1e3 * statistics.median(no_scalar),
        **look_ups,
        "load_avg": os.getloadavg()[0],
    }


def _fetch_times(table: lancedb.table.Table) -> dict[str, float]:
    """p50 of ``fetch`` of one training sentence's 'ref' states, with and without the sent_id BTREE."""
    n = int(pc.max(table.search().select(["sent_id"]).limit(None).to_arrow()["sent_id"]).as_py()) + 1
    ids = np.random.default_rng(1).choice(n, NO_SCALAR_QUERIES, replace=False)

    def p50() -> float:
        return 1e3 * statistics.median(
            _timed(lambda i=i: fetch(table, f"sent_id = {i} AND decoding = 'ref'", COLUMNS)) for i in ids
        )

    with_index = p50()
    table.drop_index(next(ix.name for ix in table.list_indices() if ix.columns == ["sent_id"]))
    without = p50()
    table.create_index("sent_id", config=BTree(), replace=True)
    return {"fetch_p50_ms": with_index, "fetch_p50_ms_without_btree": without}


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


ROWS: list[tuple[str, Any]] = [
    ("decoder states (ref)", lambda f: f"{f['rows']:,} ({f['ref_rows']:,})"),
    ("queries (test-split states)", lambda f: f"{f['queries']}"),
    ("index", lambda f: f"{f['index']['index_type']}, {f['index']['num_partitions']} partitions"),
    (
        "search",
        lambda f: f"nprobes {f['index']['search_nprobes']}, refine x{f['index']['search_refine_factor']}",
    ),
    ("build, vector + scalar (s)", lambda f: f"{f['build_s']:.1f}"),
    ("vector index on disk (MB)", lambda f: f"{f['vector_index_mb']:.1f}"),
    ("scalar indexes on disk (MB)", lambda f: f"{f['scalar_indexes_mb']:.1f}"),
    (
        f"recall@{K} (>= {TARGETS['recall']})",
        lambda f: f"{f['recall']:.3f} {_verdict(f['recall'] >= TARGETS['recall'])}",
    ),
    (f"recall@{K}, tie-aware", lambda f: f"{f['recall_tie_aware']:.3f}"),
    (
        f"single query p50 (< {TARGETS['p50_ms']:.0f} ms)",
        lambda f: f"{f['p50_ms']:.2f} ms {_verdict(f['p50_ms'] < TARGETS['p50_ms'])}",
    ),
    ("single query p95", lambda f: f"{f['p95_ms']:.2f} ms"),
    ("batch, all queries in 1 call", lambda f: f"{f['batch_queries_per_s']:.0f} queries/s"),
    ("p50 without decoding BITMAP", lambda f: f"{f['p50_ms_without_scalar_index']:.2f} ms"),
    ("fetch a sentence's states, p50", lambda f: f"{f['fetch_p50_ms']:.2f} ms"),
    ("fetch, without sent_id BTREE", lambda f: f"{f['fetch_p50_ms_without_btree']:.2f} ms"),
    ("load average (1 min)", lambda f: f"{f['load_avg']:.2f}"),
]


def report(figures: dict[str, dict[str, Any]]) -> None:
    """One column per table, one row per figure."""
    width = max(len(label) for label, _ in ROWS) + 2
    cells = {name: [fn(f) for _, fn in ROWS] for name, f in figures.items()}
    cols = {name: max(len(name), *(len(c) for c in col)) + 3 for name, col in cells.items()}
    print("".ljust(width) + "".join(name.ljust(cols[name]) for name in figures))
    for i, (label, _) in enumerate(ROWS):
        print(label.ljust(width) + "".join(cells[name][i].ljust(cols[name]) for name in figures))


def main(device_name: str = "auto") -> dict[str, Any]:
    figures: dict[str, Any] = {}
    try:
        demo = demo_table()
        if demo is not None:
            figures[f"demo: {DEMO_TRAIN}"] = measure(*demo)
        figures[f"2.5M: {BIG_TRAIN}"] = measure(*big_table(device_name))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"== nearest training states: k={K}, where {WHERE}, cosine, {os.cpu_count()} cores ==")
    if demo is None:
        print(f"(demo skipped: {DEMO} has no {DEMO_TRAIN} and {DEMO_TEST} decoder states)")
    report(figures)
    return figures


if __name__ == "__main__":
    main()
