"""Nearest training states (the neighbour engine's decoder bank, ``pipeline.neighbours``) at demo
size and at 2.6M states.

A decoder bank holds one training run's reference-forced ('ref') decoder states of a dates model,
labelled by the reference token that followed. Two of them:

(a) the demo warehouse's training run (``dates-train-10000``: 110,000 'ref' states of 220,000
    decoder rows), queried with states of the demo's test run; skipped when the demo has none;
(b) ``task:dates:train:240000`` traced with the bench model (``bench.common.dates_model``) into
    ``.beamscope/bench/ann-2.5m/<model hash>/`` as run ``dates-train-240000`` (2,640,000 'ref'
    states, 11 a sentence; traced once, ~16 min on 2 cores, and reused while complete; its encoder
    states are dropped), queried with states of run ``dates-test-1000`` (``task:dates:test:1000``)
    traced beside it. A bank holds only 'ref' states, so it takes 240,000 sentences, not the
    120,000 of this benchmark's LanceDB-index version (whose 2.64M decoder rows were half 'hyp'),
    to search 2.5M states: an ``IVF6496,SQfp16`` bank of ~0.7 GB.

For each: ``build_bank`` (timed; (a) on a copy of the decoder table under
``.beamscope/bench/ann-work/``, removed afterwards, so the demo's own bank stays as it is; (b) in
the cache, where the bank stays), the bank's two files' size on disk, the time to open it, and over
``QUERIES`` test decoder states (a seeded sample of those stored with a vector: 'ref' states and
the 'hyp' states that differ from them) with ``k = 10``:

- recall@10 against exact cosine search (numpy float32 over every 'ref' state, in chunks), plain
  and tie-aware (a returned state counts when its exact distance is <= the exact 10th distance +
  1e-6: the dates states have many near-duplicates), for two paths: the raw bank search (what the
  trace's agreement columns read) and the dashboard's (``REFINE`` * k candidates from the bank,
  their stored vectors read from LanceDB with ``fetch`` and re-ranked by exact cosine distance, as
  ``warehouse.states`` does, less its token look-ups);
- single-query latency of both paths (one query at a time, after a warm-up pass over all
  queries; p50, p95) and batch cost of the bank search (all queries in one call, best of 2; µs a
  query, for k and for the dashboard's ``REFINE`` * k candidates); and, to show what the scalar
  index on ``sent_id`` is for (the dashboard reads its candidates' stored rows by ``sent_id``; it is
  built on the training table when missing), the dashboard path's p50 with that index dropped;
- agreement: per query, the share of its 10 neighbours labelled with the query's next token, via
  the bank (``Bank.neighbour_labels``, as the trace computes it) and via exact search; the share of
  queries where the two differ by at most 0.1.

Targets (``TARGETS``): tie-aware recall@10 >= 0.95 on the dashboard path; single-query p50 < 20 ms.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree

from bench.common import CACHE, dates_model, traced_once
from pipeline.beam import DecodeConfig
from pipeline.models import load_model, resolve_device
from pipeline.neighbours import Bank, BankInfo, build_bank, open_bank
from pipeline.writer.files import write_manifest
from pipeline.writer.indexes import build_indexes
from schemas.layout import banks_dir, new_manifest, open_vectors, vector_table, vectors_dir
from warehouse.states import REFINE
from warehouse.vectors import fetch

DEMO = Path("demo/warehouse")
DEMO_TRAIN = "dates-transformer.dates-train-10000.train"
DEMO_TEST = "dates-transformer.dates-test-2000.test"
BIG_TRAIN = "task:dates:train:240000"  # 11 'ref' decoder states a sentence: 2.64M in the bank
BIG_TEST = "task:dates:test:1000"
DECODING = DecodeConfig(beam=5, max_len=20)
QUERIES = 500
K = 10
REF = "decoding = 'ref'"  # the states a decoder bank holds
TIE_EPS = 1e-6
AGREEMENT_TOLERANCE = 0.1
NO_INDEX_QUERIES = 50  # dashboard searches timed without the sent_id index
TARGETS = {"recall": 0.95, "p50_ms": 20.0}  # recall: tie-aware, dashboard path
WORK = CACHE / "ann-work"  # (a)'s working copy, removed after the run


@dataclass(frozen=True)
class DataSet:
    """A warehouse holding a training run's decoder states (its bank is built there) and the
    decoder states of a test run (the queries)."""

    root: Path
    train: str
    test: lancedb.table.Table


def demo_data() -> DataSet | None:
    """(a): a copy of the demo's training decoder states, and the demo's test states."""
    src = vectors_dir(DEMO)
    train, test = (vector_table("decoder_states", run) for run in (DEMO_TRAIN, DEMO_TEST))
    if not all((src / f"{name}.lance").is_dir() for name in (train, test)):
        return None
    root = WORK / "demo"
    shutil.rmtree(root, ignore_errors=True)
    write_manifest(root, new_manifest())
    shutil.copytree(src / f"{train}.lance", vectors_dir(root) / f"{train}.lance")
    return DataSet(root, DEMO_TRAIN, lancedb.connect(str(src)).open_table(test))


def big_data(device_name: str) -> DataSet:
    """(b): ``BIG_TRAIN`` and ``BIG_TEST`` traced with the bench model (cached by model hash)."""
    device = resolve_device(device_name)
    model_dir = dates_model(device)
    root = CACHE / "ann-2.5m" / load_model(model_dir, device).hash
    train, test = (_traced(root, model_dir, corpus, device_name) for corpus in (BIG_TRAIN, BIG_TEST))
    db = lancedb.connect(str(vectors_dir(root)))
    for run in (train, test):  # only decoder states are searched here: less on disk
        if open_vectors(db, vector_table("encoder_states", run)) is not None:
            db.drop_table(vector_table("encoder_states", run))
    return DataSet(root, train, db.open_table(vector_table("decoder_states", test)))


def _traced(root: Path, model_dir: Path, corpus: str, device_name: str) -> str:
    """The run of ``corpus`` in warehouse ``root`` (traced once)."""
    return traced_once(
        root,
        corpus.removeprefix("task:").replace(":", "-"),
        model=str(model_dir),
        corpus=corpus,
        decoding=DECODING,
        batch_size=128,
        part_size=4096,
        device=device_name,
        neighbours_run=None,  # no agreement columns: the bank is built and timed here
    )


def _training_table(ds: DataSet) -> lancedb.table.Table:
    """The training run's decoder table, with the ``sent_id`` index the dashboard's look-ups use."""
    name = vector_table("decoder_states", ds.train)
    table = lancedb.connect(str(vectors_dir(ds.root))).open_table(name)
    if not any(ix.columns == ["sent_id"] for ix in table.list_indices()):
        build_indexes(ds.root, [ds.train], min_rows=1, progress=False)
        table = lancedb.connect(str(vectors_dir(ds.root))).open_table(name)
    return table


def _vectors(table: pa.Table) -> np.ndarray:
    """[rows, d] float32 vectors of ``table`` (stored float16 or float32, none null)."""
    col = table["vector"].combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, col.type.list_size)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _keys(sent_id: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (sent_id.astype(np.int64) << 16) | pos.astype(np.int64)


def _rows_of(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``keys`` (unique) of each of ``wanted`` (all of which must be there)."""
    order = np.argsort(keys, kind="stable")
    at = order[np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)]
    if not np.array_equal(keys[at], wanted):
        raise RuntimeError("bank rows missing from the stored 'ref' decoder states")
    return at


def exact_base(table: lancedb.table.Table, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """Every stored 'ref' state as a unit float32 vector [n, d] (exact search's base), and each
    bank row's row there."""
    ref = fetch(table, REF, ["sent_id", "step", "vector"])
    base = _unit(_vectors(ref))
    at = _rows_of(_keys(ref["sent_id"].to_numpy(), ref["step"].to_numpy()), _keys(bank.sent_id, bank.pos))
    return base, at


def sample_queries(test: lancedb.table.Table) -> tuple[np.ndarray, np.ndarray]:
    """``QUERIES`` seeded test decoder states stored with a vector: vectors [n, d], next tokens [n]."""
    pool = test.search().select(["next_token", "vector"]).limit(None).to_arrow()
    pool = pool.filter(pool["vector"].is_valid())  # a 'hyp' row without one repeats a 'ref' state
    pick = np.random.default_rng(0).choice(pool.num_rows, min(QUERIES, pool.num_rows), replace=False)
    chosen = pool.take(pa.array(np.sort(pick)))
    return _vectors(chosen), np.array(chosen["next_token"].to_pylist(), dtype=object)


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


def raw_search(bank: Bank, query: np.ndarray) -> np.ndarray:
    """Bank rows [K] of one query's nearest states, as the trace's agreement reads them."""
    return bank.search(query[None], K)[0][0]


def dashboard_search(bank: Bank, table: lancedb.table.Table, query: np.ndarray) -> np.ndarray:
    """Bank rows [<= K] of one query's nearest states as the dashboard finds them
    (``warehouse.states._neighbours``): ``REFINE`` * K candidates from the bank, their stored
    vectors read from LanceDB, re-ranked by exact cosine distance."""
    found = bank.search(query[None], REFINE * K)[0][0]
    found = found[found >= 0]
    ids = ", ".join(str(int(i)) for i in np.unique(bank.sent_id[found])) or "-1"
    stored = fetch(table, f"sent_id IN ({ids}) AND {REF}", ["sent_id", "step", "vector"])
    keys = _keys(stored["sent_id"].to_numpy(), stored["step"].to_numpy())
    vectors = _unit(_vectors(stored)[_rows_of(keys, _keys(bank.sent_id[found], bank.pos[found]))])
    distance = 1 - vectors @ _unit(query[None])[0]
    return found[np.argsort(distance, kind="stable")[:K]]


def recall(
    got: np.ndarray, exact_rows: np.ndarray, exact_dist: np.ndarray, base: np.ndarray, queries: np.ndarray
) -> tuple[float, float]:
    """Plain and tie-aware recall@K of ``got`` [n, K] (base rows, -1: none) against exact search."""
    found = got >= 0
    plain = np.mean([len(set(g[g >= 0]) & set(e)) for g, e in zip(got, exact_rows, strict=True)]) / K
    dist = 1 - np.einsum("nkd,nd->nk", base[np.maximum(got, 0)], queries)
    tied = np.sum(found & (dist <= exact_dist[:, -1:] + TIE_EPS)) / (K * len(got))
    return float(plain), float(tied)


def agreement_within(
    bank: Bank, queries: np.ndarray, tokens: np.ndarray, exact_labels: np.ndarray
) -> tuple[float, float]:
    """Share of queries whose agreement (share of the K neighbours labelled with the query's next
    token) via the bank is within ``AGREEMENT_TOLERANCE`` of exact search's, and the mean |gap|."""
    codes = bank.codes(tokens)[:, None]
    via_bank = (bank.neighbour_labels(queries.copy(), K) == codes).mean(1)
    via_exact = (exact_labels == codes).mean(1)
    gap = np.abs(via_bank - via_exact)
    return float(np.mean(gap <= AGREEMENT_TOLERANCE + 1e-6)), float(gap.mean())


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency(search: Callable[[np.ndarray], object], queries: np.ndarray) -> dict[str, float]:
    """p50 and p95 (ms) of ``search`` one query at a time (call it after a warm-up pass)."""
    times = [_timed(lambda q=q: search(q)) for q in queries]
    return {"p50_ms": 1e3 * statistics.median(times), "p95_ms": 1e3 * float(np.percentile(times, 95))}


def without_sent_id_index(
    table: lancedb.table.Table, search: Callable[[np.ndarray], object], queries: np.ndarray
) -> float:
    """p50 (ms) of ``search`` over ``NO_INDEX_QUERIES`` queries with the training table's
    ``sent_id`` BTREE dropped (rebuilt afterwards): what the scalar index does for the dashboard."""
    table.drop_index(next(ix.name for ix in table.list_indices() if ix.columns == ["sent_id"]))
    try:
        return latency(search, queries[:NO_INDEX_QUERIES])["p50_ms"]
    finally:
        table.create_index("sent_id", config=BTree(), replace=True)


def batch_us(bank: Bank, queries: np.ndarray, k: int) -> float:
    """µs a query of one ``bank.search`` call over all ``queries`` (best of 2)."""
    return 1e6 * min(_timed(lambda: bank.search(queries.copy(), k)) for _ in range(2)) / len(queries)


def bank_files(root: Path, info: BankInfo) -> int:
    """Bytes on disk of the bank's index and row files."""
    return sum((banks_dir(root, info.run_id) / name).stat().st_size for name in info.files)


def measure(ds: DataSet) -> dict[str, Any]:
    """Figures of the decoder bank of ``ds``'s training run for ``QUERIES`` of its test states."""
    table = _training_table(ds)
    info = build_bank(ds.root, ds.train, "decoder")
    open_s = _timed(lambda: open_bank(ds.root, ds.train, "decoder"))
    bank = open_bank(ds.root, ds.train, "decoder")
    assert bank is not None
    base, base_row = exact_base(table, bank)
    assert len(base) == info.states, "the bank holds every 'ref' state (no --bank-size sample)"
    queries, tokens = sample_queries(ds.test)
    unit = _unit(queries)
    exact_rows, exact_dist = exact_top(base, unit, K)
    exact_labels = np.empty(len(base), dtype=np.int32)
    exact_labels[base_row] = bank.labels
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "raw": lambda q: raw_search(bank, q),
        "dashboard": lambda q: dashboard_search(bank, table, q),
    }
    figures: dict[str, Any] = {}
    for name, search in paths.items():
        got = np.full((len(queries), K), -1, dtype=np.int64)
        for i, q in enumerate(queries):  # the warm-up pass
            rows = search(q.copy())
            got[i, : len(rows)] = np.where(rows >= 0, base_row[np.maximum(rows, 0)], -1)
        plain, tied = recall(got, exact_rows, exact_dist, base, unit)
        times = latency(lambda q, search=search: search(q.copy()), queries)
        figures[name] = {"recall": plain, "recall_tie_aware": tied, **times}
    within, gap = agreement_within(bank, queries, tokens, exact_labels[exact_rows])
    no_index = without_sent_id_index(table, lambda q: dashboard_search(bank, table, q.copy()), queries)
    return {
        "rows": table.count_rows(),
        "states": info.states,
        "queries": len(queries),
        "index": info.index,
        "nprobe": getattr(bank.index, "nprobe", None),
        "build_s": info.build_seconds,
        "open_s": open_s,
        "bank_mb": bank_files(ds.root, info) / 1e6,
        **{f"{path}_{k}": v for path, f in figures.items() for k, v in f.items()},
        "dashboard_p50_ms_without_btree": no_index,
        "batch_us": batch_us(bank, queries, K),
        "batch_us_candidates": batch_us(bank, queries, REFINE * K),
        "agreement_within": within,
        "agreement_gap": gap,
        "load_avg": os.getloadavg()[0],
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _p50(f: dict[str, Any], path: str) -> str:
    p50 = f[f"{path}_p50_ms"]
    return f"{p50:.2f} ms {_verdict(p50 < TARGETS['p50_ms'])}"


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("bank states (decoder rows)", lambda f: f"{f['states']:,} ({f['rows']:,})"),
    ("queries (test-split states)", lambda f: f"{f['queries']}"),
    ("index", lambda f: f"{f['index']}" + ("" if f["nprobe"] is None else f", nprobe {f['nprobe']}")),
    ("build (s)", lambda f: f"{f['build_s']:.1f}"),
    ("open (s)", lambda f: f"{f['open_s']:.2f}"),
    ("bank files on disk (MB)", lambda f: f"{f['bank_mb']:.1f}"),
    (f"recall@{K}, bank", lambda f: f"{f['raw_recall']:.3f}"),
    (f"recall@{K}, bank, tie-aware", lambda f: f"{f['raw_recall_tie_aware']:.3f}"),
    (f"recall@{K}, dashboard (x{REFINE} re-ranked)", lambda f: f"{f['dashboard_recall']:.3f}"),
    (
        f"  tie-aware (>= {TARGETS['recall']})",
        lambda f: (
            f"{f['dashboard_recall_tie_aware']:.3f} "
            + _verdict(f["dashboard_recall_tie_aware"] >= TARGETS["recall"])
        ),
    ),
    (f"single query p50, bank (< {TARGETS['p50_ms']:.0f} ms)", lambda f: _p50(f, "raw")),
    ("single query p95, bank", lambda f: f"{f['raw_p95_ms']:.2f} ms"),
    (f"single query p50, dashboard (< {TARGETS['p50_ms']:.0f} ms)", lambda f: _p50(f, "dashboard")),
    ("single query p95, dashboard", lambda f: f"{f['dashboard_p95_ms']:.2f} ms"),
    ("  p50 without sent_id BTREE", lambda f: f"{f['dashboard_p50_ms_without_btree']:.2f} ms"),
    (f"batch, k={K}, all queries in 1 call", lambda f: f"{f['batch_us']:.0f} µs/query"),
    (f"batch, k={REFINE * K} (dashboard candidates)", lambda f: f"{f['batch_us_candidates']:.0f} µs/query"),
    (
        f"agreement within {AGREEMENT_TOLERANCE} of exact",
        lambda f: f"{f['agreement_within']:.1%} of queries (mean gap {f['agreement_gap']:.3f})",
    ),
    ("load average (1 min)", lambda f: f"{f['load_avg']:.2f}"),
]


def report(figures: dict[str, dict[str, Any]]) -> None:
    """One column per data set, one row per figure."""
    width = max(len(label) for label, _ in ROWS) + 2
    cells = {name: [fn(f) for _, fn in ROWS] for name, f in figures.items()}
    cols = {name: max(len(name), *(len(c) for c in col)) + 3 for name, col in cells.items()}
    print("".ljust(width) + "".join(name.ljust(cols[name]) for name in figures))
    for i, (label, _) in enumerate(ROWS):
        print(label.ljust(width) + "".join(cells[name][i].ljust(cols[name]) for name in figures))


def main(device_name: str = "auto") -> dict[str, Any]:
    figures: dict[str, Any] = {}
    try:
        demo = demo_data()
        if demo is not None:
            figures[f"demo: {DEMO_TRAIN}"] = measure(demo)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    figures[f"2.5M: {BIG_TRAIN}"] = measure(big_data(device_name))
    print(
        f"== nearest training states: decoder bank, k={K}, cosine, {os.cpu_count()} cores, "
        f"{faiss.omp_get_max_threads()} faiss threads =="
    )
    if demo is None:
        print(f"(demo skipped: {DEMO} has no {DEMO_TRAIN} and {DEMO_TEST} decoder states)")
    report(figures)
    return figures


if __name__ == "__main__":
    main()
