"""The writers' output matches the schemas exactly; vectors carry their keys."""

import lancedb
import pyarrow.parquet as pq
import pytest

from schemas import TABLES, decoder_states_schema, encoder_states_schema
from schemas.layout import vector_table, vectors_dir
from schemas.tables import RUN_TABLES


@pytest.mark.parametrize("table", list(TABLES))
def test_parquet_parts_match_the_schema(warehouse_dir, table) -> None:
    parts = sorted((warehouse_dir / "tables" / table).glob("*/*.parquet"))
    assert parts
    for part in parts:
        f = pq.ParquetFile(part)
        assert f.schema_arrow.equals(TABLES[table], check_metadata=False), part
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        ids = f.read(columns=["sent_id"])["sent_id"].to_pylist() if table not in RUN_TABLES else []
        assert ids == sorted(ids)


def test_vector_tables_match_their_schemas(warehouse_dir, tiny) -> None:
    db = lancedb.connect(str(vectors_dir(warehouse_dir)))
    dim = tiny.net.config.d_model
    enc = db.open_table(vector_table("encoder_states", "beam4"))
    dec = db.open_table(vector_table("decoder_states", "beam4"))
    assert enc.schema.equals(encoder_states_schema(dim))
    assert dec.schema.equals(decoder_states_schema(dim))
    n_src = pq.read_table(warehouse_dir / "tables/source_tokens/run=beam4").num_rows
    n_steps = sum(
        pq.read_table(warehouse_dir / f"tables/{t}/run=beam4").num_rows
        for t in ("target_steps", "reference_steps")
    )
    assert enc.count_rows() == n_src
    assert dec.count_rows() == n_steps


def test_shared_hypothesis_states_are_stored_once_and_read_as_both(warehouse_dir) -> None:
    """A 'hyp' decoder state up to the first divergence is the reference-forced one: its row has
    no vector, and reading the hypothesis' states gives the 'ref' row's there."""
    from warehouse.states import hyp_states

    db = lancedb.connect(str(vectors_dir(warehouse_dir)))
    rows = db.open_table(vector_table("decoder_states", "greedy")).to_arrow()
    sents = pq.read_table(warehouse_dir / "tables/sentences/run=greedy").to_pylist()
    shared = {
        s["sent_id"]: min(s["hyp_len"], s["ref_len"], s["hyp_len"] if s["first_divergence_step"] is None
                          else s["first_divergence_step"] + 1)
        for s in sents
    }  # fmt: skip
    hyp = [r for r in rows.to_pylist() if r["decoding"] == "hyp"]
    ref = {(r["sent_id"], r["step"]): r["vector"] for r in rows.to_pylist() if r["decoding"] == "ref"}
    assert sum(r["vector"] is None for r in hyp) > 0 and sum(r["vector"] is not None for r in hyp) > 0
    for r in hyp:
        assert (r["vector"] is None) == (r["step"] < shared[r["sent_id"]]), r
    full = hyp_states(rows).to_pylist()
    assert len(full) == len(hyp) and all(r["vector"] is not None for r in full)
    for r in full:
        if r["step"] < shared[r["sent_id"]]:
            assert r["vector"] == ref[(r["sent_id"], r["step"])]
