"""Opening warehouses: plain duckdb/polars/pandas read them; moved copies open; partial runs stay hidden."""

import json
import shutil
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from pipeline.beam import DecodeConfig
from pipeline.trace import TraceConfig, trace
from schemas import SCHEMA_VERSION, SchemaVersionError, WarehouseError
from schemas.layout import part_path
from warehouse import open_warehouse, write_duckdb_file


def test_plain_duckdb_polars_and_pandas_read_it_without_beamscope(warehouse_dir) -> None:
    write_duckdb_file(warehouse_dir)
    code = (
        "import duckdb, polars as pl, pandas as pd\n"
        "c = duckdb.connect('beamscope.duckdb', read_only=True)\n"
        "n = c.execute('SELECT count(*) FROM sentences').fetchone()[0]\n"
        "p = pl.scan_parquet('tables/sentences/*/*.parquet').select(pl.len()).collect().item()\n"
        "d = len(pd.read_parquet('tables/sentences/run=greedy'))\n"
        "print(n, p, d)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=warehouse_dir, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["144", "144", "48"]


def test_a_moved_copy_still_opens(warehouse_dir, tmp_path) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(warehouse_dir, copy)
    with open_warehouse(copy) as wh:
        assert wh.sql("SELECT count(*) FROM sentences").item() == 144
        assert wh.vectors().open_table("decoder_states__greedy").count_rows() > 0


def test_a_run_being_written_is_not_visible(warehouse_dir, tmp_path) -> None:
    copy = tmp_path / "partial"
    shutil.copytree(warehouse_dir, copy)
    runs = pl.read_parquet(part_path(copy, "runs", "lstm", 0))
    runs.with_columns(status=pl.lit("running")).write_parquet(part_path(copy, "runs", "lstm", 0))
    with open_warehouse(copy) as wh:
        assert sorted(wh.run_ids()) == ["beam4", "greedy"]
        assert wh.sql("SELECT count(DISTINCT run_id) FROM sentences").item() == 2
        assert wh.sql("SELECT count(DISTINCT run_id) FROM raw.sentences").item() == 3


def test_foreign_and_newer_warehouses_are_refused(warehouse_dir, tmp_path) -> None:
    with pytest.raises(WarehouseError, match="not a beamscope warehouse"):
        open_warehouse(tmp_path)
    copy = tmp_path / "newer"
    shutil.copytree(warehouse_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaVersionError, match="upgrade beamscope"):
        open_warehouse(copy)


def test_long_sources_are_skipped_and_counted(tiny_dir, tmp_path) -> None:
    corpus = tmp_path / "c.tsv"
    corpus.write_text("5.3.21\t2021-03-05\n" + "x" * 400 + "\t2021-03-05\n6.3.21\t2021-03-06\n")
    s = trace(
        TraceConfig(
            model=str(tiny_dir),
            corpus=str(corpus),
            warehouse=str(tmp_path / "wh"),
            decoding=DecodeConfig(beam=2, max_len=12),
            device="cpu",
        ),
        progress=False,
    )
    assert (s.n_sentences, s.n_skipped) == (3, 1)
    with open_warehouse(tmp_path / "wh") as wh:
        assert wh.sql("SELECT sent_id FROM sentences ORDER BY 1")["sent_id"].to_list() == [0, 2]
        skip = wh.sql("SELECT sent_id, line, reason FROM skipped").row(0)
        assert skip[:2] == (1, 2) and "at most 256" in skip[2]
        assert wh.sql("SELECT n_skipped FROM runs").item() == 1


def test_other_settings_under_the_same_run_name_are_refused(tiny_dir, tmp_path) -> None:
    cfg = TraceConfig(
        model=str(tiny_dir),
        corpus="task:dates:test:4",
        warehouse=str(tmp_path / "wh"),
        run_name="x",
        decoding=DecodeConfig(beam=2, max_len=12),
        device="cpu",
    )
    trace(cfg, progress=False)
    again = trace(cfg, progress=False)
    assert again.already_complete
    with pytest.raises(WarehouseError, match="other settings"):
        trace(TraceConfig(**{**cfg.__dict__, "decoding": DecodeConfig(beam=3, max_len=12)}), progress=False)


def test_duckdb_file_is_replaced_atomically(warehouse_dir) -> None:
    path = write_duckdb_file(warehouse_dir)
    con = duckdb.connect(str(path), read_only=True)
    write_duckdb_file(warehouse_dir)  # an open reader keeps its file
    con.execute(f"SET file_search_path = '{warehouse_dir}'")
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    con.close()
