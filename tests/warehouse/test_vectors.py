"""Nearest-state search and key look-ups over LanceDB vector tables, against brute force."""

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schemas import decoder_states_schema
from schemas.layout import new_manifest, read_manifest, vector_table, vectors_dir, write_manifest
from warehouse.vectors import build_indexes, fetch, nearest, vector_index

DIM = 32
SENTENCES = 200
STEPS = 10
HALF = SENTENCES * STEPS  # 'hyp' rows, then as many 'ref' rows
RUN = "train"


def decoder_table(root: Path, vectors: np.ndarray) -> lancedb.table.Table:
    """A decoder-states table of ``vectors`` (hyp rows first, then ref rows), keyed by sent_id and step."""
    n = len(vectors) // 2
    sent = np.tile(np.repeat(np.arange(SENTENCES), STEPS), 2)
    step = np.tile(np.arange(STEPS), 2 * SENTENCES)
    schema = decoder_states_schema(DIM)
    data = pa.table(
        {
            "run_id": [RUN] * len(vectors),
            "sent_id": sent,
            "decoding": ["hyp"] * n + ["ref"] * n,
            "step": step.astype(np.int32),
            "token": [f"t{i % 7}" for i in range(len(vectors))],
            "next_token": [f"t{i % 5}" for i in range(len(vectors))],
            "split": ["train"] * len(vectors),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        },
        schema=schema,
    )
    write_manifest(root, new_manifest())
    db = lancedb.connect(str(vectors_dir(root)))
    return db.create_table(vector_table("decoder_states", RUN), data=data, schema=schema)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and cosine distances [n, k] of the exact k nearest rows of ``base``."""
    dist = 1 - unit(queries) @ unit(base).T
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(dist, idx, 1)


def row_of(result: pa.Table, offset: int = 0) -> np.ndarray:
    """Row index (in ``decoder_table`` order, ``offset`` for the ref half) of each result row."""
    return offset + result["sent_id"].to_numpy() * STEPS + result["step"].to_numpy()


@pytest.fixture
def gaussian() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2 * HALF, DIM)).astype(np.float32)


@pytest.fixture
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """States around 40 centres (like a model's states around its frequent contexts) and queries."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, DIM)) * 3
    base = centres[rng.integers(0, 40, 2 * HALF)] + rng.standard_normal((2 * HALF, DIM))
    queries = centres[rng.integers(0, 40, 100)] + rng.standard_normal((100, DIM))
    return base.astype(np.float32), queries.astype(np.float32)


def test_without_index_it_is_exact_knn(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    queries = np.random.default_rng(2).standard_normal((5, DIM)).astype(np.float32)
    out = nearest(table, queries, k=10)
    assert vector_index(table) is None
    keys = [f.name for f in decoder_states_schema(DIM) if f.name != "vector"]
    assert out.column_names == ["query_index", *keys, "_distance"]
    idx, dist = brute_force(gaussian, queries, 10)
    hyp = np.array(out["decoding"].to_pylist()) == "hyp"
    rows = np.where(hyp, row_of(out), row_of(out, HALF)).reshape(5, 10)
    np.testing.assert_array_equal(rows, idx)
    np.testing.assert_allclose(out["_distance"].to_numpy().reshape(5, 10), dist, atol=1e-5)


def test_where_filters_before_the_search(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    queries = gaussian[:3] + 0.01  # nearest overall: their own 'hyp' rows, which the filter drops
    out = nearest(table, queries, k=10, where="decoding = 'ref'", columns=["sent_id", "step", "decoding"])
    assert set(out["decoding"].to_pylist()) == {"ref"}
    idx, dist = brute_force(gaussian[HALF:], queries, 10)
    np.testing.assert_array_equal(row_of(out).reshape(3, 10), idx)
    np.testing.assert_allclose(out["_distance"].to_numpy().reshape(3, 10), dist, atol=1e-5)


def test_a_batch_equals_one_query_at_a_time(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    queries = np.random.default_rng(3).standard_normal((4, DIM)).astype(np.float32)
    batch = nearest(table, queries, k=7, columns=["sent_id", "decoding", "step"])
    assert batch["query_index"].type == pa.int32()
    assert batch["query_index"].to_pylist() == [i for i in range(4) for _ in range(7)]
    for i, q in enumerate(queries):
        one = nearest(table, q, k=7, columns=["sent_id", "decoding", "step"])
        assert one["query_index"].to_pylist() == [0] * 7
        part = batch.filter(pc.equal(batch["query_index"], i))
        assert part.drop_columns("query_index").equals(one.drop_columns("query_index"))
        assert np.all(np.diff(part["_distance"].to_numpy()) >= 0)


def test_with_an_index_recall_stays_high_and_distances_exact(tmp_path, clustered) -> None:
    base, queries = clustered
    table = decoder_table(tmp_path, base)
    reports = build_indexes(tmp_path, [RUN], min_rows=1000, progress=False)
    assert [(r.table, r.built, r.params["index_type"]) for r in reports] == [
        (vector_table("decoder_states", RUN), True, "IVF_SQ")
    ]
    assert read_manifest(tmp_path)["indexes"][reports[0].table]["num_partitions"] == 63
    table = lancedb.connect(str(vectors_dir(tmp_path))).open_table(reports[0].table)
    assert vector_index(table) == ("IVF_SQ", len(base))
    assert {tuple(ix.columns) for ix in table.list_indices()} == {("vector",), ("sent_id",), ("decoding",)}
    out = nearest(table, queries, k=10, where="decoding = 'ref'", columns=["sent_id", "step"])
    idx, dist = brute_force(base[HALF:], queries, 10)
    got = row_of(out).reshape(len(queries), 10)
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, idx, strict=True)])
    assert recall >= 0.9
    found = base[HALF:][got]
    exact = 1 - np.einsum("qkd,qd->qk", unit(found), unit(queries))
    np.testing.assert_allclose(out["_distance"].to_numpy().reshape(len(queries), 10), exact, atol=1e-5)
    narrow = nearest(table, queries[:3], k=10, where="sent_id = 7", columns=["sent_id", "step", "decoding"])
    assert narrow["query_index"].to_pylist() == [i for i in range(3) for _ in range(10)]
    assert set(narrow["sent_id"].to_pylist()) == {7}


def test_fetch_finds_rows_by_key_with_and_without_index(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    where = "sent_id = 5 AND step = 3 AND decoding = 'hyp'"
    before = fetch(table, where, ["sent_id", "step", "vector"])
    build_indexes(tmp_path, [RUN], min_rows=1000, progress=False)
    after = fetch(table, where, ["sent_id", "step", "vector"])
    assert before.equals(after) and before.num_rows == 1
    np.testing.assert_array_equal(before["vector"].to_numpy(zero_copy_only=False)[0], gaussian[5 * STEPS + 3])


def test_queries_of_the_wrong_width_are_refused(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    with pytest.raises(ValueError, match=r"vectors must be \[n >= 1, 32\]"):
        nearest(table, np.zeros((2, 16), dtype=np.float32))
