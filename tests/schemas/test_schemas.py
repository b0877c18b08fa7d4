"""The writers' output matches the schemas exactly; vectors carry their keys."""

import lancedb
import pyarrow.parquet as pq
import pytest

from schemas import TABLES, decoder_states_schema, encoder_states_schema
from schemas.layout import vector_table, vectors_dir


@pytest.mark.parametrize("table", [t for t in TABLES if t != "blame_calibration"])  # test_calibration's
def test_parquet_parts_match_the_schema(warehouse_dir, table) -> None:
    parts = sorted((warehouse_dir / "tables" / table).glob("*/*.parquet"))
    assert parts
    for part in parts:
        f = pq.ParquetFile(part)
        assert f.schema_arrow.equals(TABLES[table], check_metadata=False), part
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        ids = f.read(columns=["sent_id"])["sent_id"].to_pylist() if "sent_id" in TABLES[table].names else []
        assert ids == sorted(ids)


def test_vector_tables_match_their_schemas(warehouse_dir, tiny) -> None:
    db = lancedb.connect(str(vectors_dir(warehouse_dir)))
    dim = tiny.net.config.d_model
    enc = db.open_table(vector_table("encoder_states", "beam4"))
    dec = db.open_table(vector_table("decoder_states", "beam4"))
    assert enc.schema.equals(encoder_states_schema(dim))
    assert dec.schema.equals(decoder_states_schema(dim))
    n_src = pq.read_table(warehouse_dir / "tables/source_tokens/run=beam4").num_rows
    n_ref = pq.read_table(warehouse_dir / "tables/reference_steps/run=beam4").num_rows
    assert enc.count_rows() == n_src
    assert dec.count_rows("decoding = 'ref'") == n_ref


def _shared_steps(sentence: dict) -> int:
    """Steps the hypothesis shares with the reference's forced decoding: up to its divergence."""
    diverge = sentence["first_divergence_step"]
    return min(
        sentence["hyp_len"], sentence["ref_len"], sentence["hyp_len"] if diverge is None else diverge + 1
    )


def test_shared_hypothesis_states_are_stored_once_and_read_as_both(warehouse_dir) -> None:
    """Up to the first divergence the hypothesis' decoder states are the reference-forced ones:
    there are 'hyp' rows only after it, and reading the hypothesis' states gives one per step,
    the 'ref' row's where they are shared, with the hypothesis' own next token."""
    import polars as pl

    from warehouse.states import hyp_states

    rows = lancedb.connect(str(vectors_dir(warehouse_dir))).open_table(
        vector_table("decoder_states", "greedy")
    )
    rows = rows.to_arrow()
    shared = {
        s["sent_id"]: _shared_steps(s)
        for s in pq.read_table(warehouse_dir / "tables/sentences/run=greedy").to_pylist()
    }
    steps = pl.read_parquet(warehouse_dir / "tables/target_steps/run=greedy/*.parquet").select(
        "sent_id", "step", "token"
    )
    hyp = [r for r in rows.to_pylist() if r["decoding"] == "hyp"]
    assert hyp and all(r["step"] >= shared[r["sent_id"]] for r in hyp)
    assert len(hyp) == sum(n - shared[s] for s, n in steps.group_by("sent_id").len().iter_rows())
    assert steps.height - len(hyp) > 0  # the shared steps are stored once (the tiny model diverges early)
    ref = {(r["sent_id"], r["step"]): r["vector"] for r in rows.to_pylist() if r["decoding"] == "ref"}
    full = hyp_states(rows, steps).to_pylist()
    assert [(r["sent_id"], r["step"], r["next_token"]) for r in full] == list(
        steps.sort("sent_id", "step").iter_rows()
    )
    for r in full:
        if r["step"] < shared[r["sent_id"]]:
            assert r["vector"] == ref[(r["sent_id"], r["step"])]
