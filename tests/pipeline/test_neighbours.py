"""Neighbour agreement per step equals a brute-force k-NN over the training run's states."""

import lancedb
import numpy as np
import polars as pl
import pytest

from pipeline.beam import DecodeConfig
from schemas.layout import vectors_dir
from warehouse.states import hyp_states

K = 10  # the taxonomy's default number of neighbours


def _states(root, kind: str, run: str) -> pl.DataFrame:
    db = lancedb.connect(str(vectors_dir(root)))
    return pl.from_arrow(db.open_table(f"{kind}__{run}").to_arrow())


def _agreement(queries: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, labels: list) -> np.ndarray:
    """Share of each query's K nearest bank rows (cosine, float64, no index) labelled like it."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    nearest = np.argsort(-(q @ b.T), axis=1, kind="stable")[:, :K]
    return np.array(
        [
            np.nan if lab is None else float(np.mean(bank_labels[row] == lab))
            for row, lab in zip(nearest, labels, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def states(train_warehouse_dir):
    enc = _states(train_warehouse_dir, "encoder_states", "train")
    dec = _states(train_warehouse_dir, "decoder_states", "train").filter(pl.col("decoding") == "ref")
    return {
        "encoder": (np.stack(enc["vector"].to_numpy()).astype(np.float64), enc["token"].to_numpy()),
        "decoder": (np.stack(dec["vector"].to_numpy()).astype(np.float64), dec["next_token"].to_numpy()),
    }


def _parquet(root, table: str) -> pl.DataFrame:
    return pl.read_parquet(root / f"tables/{table}/run=test/*.parquet").sort(
        "sent_id", pl.all().exclude("sent_id")
    )


def test_source_token_agreement(train_warehouse_dir, states) -> None:
    src = _parquet(train_warehouse_dir, "source_tokens").sort("sent_id", "src_pos")
    enc = _states(train_warehouse_dir, "encoder_states", "test").sort("sent_id", "src_pos")
    assert enc.select("sent_id", "src_pos").equals(src.select("sent_id", "src_pos"))
    expected = _agreement(np.stack(enc["vector"].to_numpy()), *states["encoder"], src["token"].to_list())
    assert src["nn_agreement"].null_count() == 0
    np.testing.assert_allclose(src["nn_agreement"].to_numpy(), expected, atol=1e-6)


def test_decoder_step_agreement(train_warehouse_dir, states) -> None:
    steps = _parquet(train_warehouse_dir, "target_steps").sort("sent_id", "step")
    ref = _parquet(train_warehouse_dir, "reference_steps").sort("sent_id", "step")
    sents = pl.read_parquet(train_warehouse_dir / "tables/sentences/run=test/*.parquet")
    dec = _states(train_warehouse_dir, "decoder_states", "test")
    # up to the first divergence the hypothesis read the reference's prefix: its state is the
    # reference-forced one (stored once, as the 'ref' row); after it, the hypothesis' own
    query = pl.from_arrow(hyp_states(dec.to_arrow(), steps.select("sent_id", "step", "token")))
    assert query.select("sent_id", "step").equals(steps.select("sent_id", "step"))
    assert (sents["first_divergence_step"].is_not_null()).sum() > 0  # the test covers diverged sentences
    ref_at = steps.join(
        ref.select("sent_id", "step", pl.col("token").alias("ref_token")), on=["sent_id", "step"], how="left"
    )
    vectors = np.stack(query["vector"].to_numpy())
    np.testing.assert_allclose(
        steps["nn_agreement"].to_numpy(),
        _agreement(vectors, *states["decoder"], steps["token"].to_list()),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        ref_at["nn_ref_agreement"].to_numpy(),
        _agreement(vectors, *states["decoder"], ref_at["ref_token"].to_list()),
        atol=1e-6,
    )
    forced_vectors = np.stack(
        dec.filter(pl.col("decoding") == "ref").sort("sent_id", "step")["vector"].to_numpy()
    )
    np.testing.assert_allclose(
        ref["nn_agreement"].to_numpy(),
        _agreement(forced_vectors, *states["decoder"], ref["token"].to_list()),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("source_tokens", "nn_agreement"),
        ("target_steps", "nn_agreement"),
        ("target_steps", "nn_ref_agreement"),
        ("reference_steps", "nn_agreement"),
    ],
)
def test_no_training_run_means_null_agreement(warehouse_dir, table, column) -> None:
    rows = pl.read_parquet(warehouse_dir / f"tables/{table}/*/*.parquet")
    assert rows.height > 0 and rows[column].null_count() == rows.height


def test_agreement_through_an_ivf_bank_equals_exact_search(train_warehouse_dir, tiny_dir, tmp_path) -> None:
    """The trace's agreement and blame through an approximate (IVF, 8-bit) bank against the exact
    bank of the fixture's training run: agreement within 0.1 on >= 99 % of the values, the same
    blamed stage for >= 99 % of the wrong sentences."""
    import shutil

    from pipeline.neighbours import KINDS, build_bank
    from tests.helpers import trace_run
    from warehouse import open_warehouse

    root = tmp_path / "wh"
    shutil.copytree(train_warehouse_dir, root)
    for kind in KINDS:
        assert build_bank(root, "train", kind, index="IVF8,SQfp16").index == "IVF8,SQfp16"
    trace_run(
        tiny_dir, "task:dates:test:48", root, "ivf", DecodeConfig(beam=3, topk=5, max_len=16), batch_size=32
    )
    with open_warehouse(root) as wh:
        for table, keys, col in (
            ("source_tokens", "sent_id, src_pos", "nn_agreement"),
            ("target_steps", "sent_id, step", "nn_agreement"),
            ("target_steps", "sent_id, step", "nn_ref_agreement"),
            ("reference_steps", "sent_id, step", "nn_agreement"),
        ):
            pairs = wh.sql(
                f"SELECT a.{col} AS a, b.{col} AS b FROM {table} a JOIN {table} b USING ({keys}) "
                f"WHERE a.run_id = 'ivf' AND b.run_id = 'test' AND b.{col} IS NOT NULL"
            )
            assert pairs.height > 0 and pairs["a"].null_count() == 0
            assert ((pairs["a"] - pairs["b"]).abs() <= 0.1 + 1e-6).mean() >= 0.99, (table, col)
        blame = wh.sql(
            "SELECT a.blamed_stage = b.blamed_stage AS same "
            "FROM sentences a JOIN sentences b USING (sent_id) "
            "WHERE a.run_id = 'ivf' AND b.run_id = 'test' AND NOT b.exact_match"
        )
    assert blame.height > 0 and blame["same"].mean() >= 0.99
