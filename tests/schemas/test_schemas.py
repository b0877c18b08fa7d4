"""The writers' output matches the schemas exactly; vectors carry their keys."""

import lancedb
import pyarrow.parquet as pq
import pytest

from schemas import TABLES, decoder_states_schema, encoder_states_schema
from schemas.layout import vector_table, vectors_dir


@pytest.mark.parametrize("table", list(TABLES))
def test_parquet_parts_match_the_schema(warehouse_dir, table) -> None:
    parts = sorted((warehouse_dir / "tables" / table).glob("*/*.parquet"))
    assert parts
    for part in parts:
        f = pq.ParquetFile(part)
        assert f.schema_arrow.equals(TABLES[table], check_metadata=False), part
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        ids = f.read(columns=["sent_id"])["sent_id"].to_pylist() if table != "runs" else []
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
