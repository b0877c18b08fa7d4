"""Key look-ups over LanceDB vector tables, with and without their scalar indexes."""

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from pipeline.writer.files import write_manifest
from pipeline.writer.indexes import build_indexes
from schemas import decoder_states_schema
from schemas.layout import new_manifest, read_manifest, vector_table, vectors_dir
from warehouse.vectors import fetch

DIM = 32
SENTENCES = 200
STEPS = 10
HALF = SENTENCES * STEPS  # 'hyp' rows, then as many 'ref' rows
RUN = "train"


def decoder_table(root: Path, vectors: np.ndarray, run: str = RUN) -> lancedb.table.Table:
    """A decoder-states table of ``vectors`` (hyp rows first, then ref rows), keyed by sent_id and step."""
    n = len(vectors) // 2
    sent = np.tile(np.repeat(np.arange(SENTENCES), STEPS), 2)
    step = np.tile(np.arange(STEPS), 2 * SENTENCES)
    schema = decoder_states_schema(DIM, "float32")
    data = pa.table(
        {
            "run_id": [run] * len(vectors),
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
    return db.create_table(vector_table("decoder_states", run), data=data, schema=schema)


@pytest.fixture
def gaussian() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2 * HALF, DIM)).astype(np.float32)


def test_fetch_finds_rows_by_key_with_and_without_index(tmp_path, gaussian) -> None:
    table = decoder_table(tmp_path, gaussian)
    where = "sent_id = 5 AND step = 3 AND decoding = 'hyp'"
    before = fetch(table, where, ["sent_id", "step", "vector"])
    reports = build_indexes(tmp_path, [RUN], min_rows=1000, progress=False)
    assert [(r.built, r.params["scalar_indexes"]) for r in reports] == [
        (True, "sent_id BTREE, decoding BITMAP")
    ]
    assert read_manifest(tmp_path)["indexes"][reports[0].table]["built"]
    table = lancedb.connect(str(vectors_dir(tmp_path))).open_table(reports[0].table)
    assert {tuple(ix.columns) for ix in table.list_indices()} == {("sent_id",), ("decoding",)}
    after = fetch(table, where, ["sent_id", "step", "vector"])
    assert before.equals(after) and before.num_rows == 1
    np.testing.assert_array_equal(before["vector"].to_numpy(zero_copy_only=False)[0], gaussian[5 * STEPS + 3])


def test_small_tables_get_no_index(tmp_path, gaussian) -> None:
    decoder_table(tmp_path, gaussian)
    (report,) = build_indexes(tmp_path, [RUN], min_rows=10 * len(gaussian), progress=False)
    assert not report.built and report.rows == len(gaussian)
