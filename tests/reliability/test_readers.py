"""Readers during writes: while ``beamscope trace`` appends a run, the dashboard (opened before),
fresh ``beamscope sql`` processes, a fresh sandbox per query and a plain ``duckdb`` reader of
``beamscope.duckdb`` keep answering from the last complete state: never an error, never a row of
the run being written, and the new run whole as soon as it is complete."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from bench.dash_client import DashClient, FlaskTransport
from dashboard.server import build
from pipeline.beam import DecodeConfig
from tests.helpers import trace_run
from tests.reliability import harness as h
from warehouse import open_warehouse
from warehouse.sandbox import SafeSQL

BASE, NEW = 12, 180
COUNTS = "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM sentences)"
STATE = (
    "SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM sentences) AS sentences, "
    "(SELECT count(*) FROM target_steps WHERE run_id = 'b') AS b_steps, "
    "(SELECT count(*) FROM raw.sentences WHERE run_id = 'b') AS b_written"
)


@pytest.fixture
def base(tmp_path, tiny_dir) -> Path:
    root = tmp_path / "wh"
    trace_run(
        tiny_dir, "task:dates:test:12", root, "a", DecodeConfig(beam=3, topk=4, max_len=14), part_size=4
    )
    from warehouse import write_duckdb_file

    write_duckdb_file(root)
    return root


def _sql_console(client: DashClient, query: str) -> list[dict]:
    status, resp = client.call(
        "sql", client.dep("sql-grid.rowData"), {"sql-run.n_clicks": 1}, {"sql-text.value": query}
    )
    assert status == 200, status
    message = resp["response"]["sql-message"]
    assert message["className"] != "error", message["children"]
    return resp["response"]["sql-grid"]["rowData"]


def _duckdb_file(root: Path) -> tuple[int, int]:
    con = duckdb.connect(str(root / "beamscope.duckdb"), read_only=True)
    try:
        con.execute(f"SET file_search_path = '{root}'")
        return con.execute(COUNTS).fetchone()
    finally:
        con.close()


def test_readers_answer_from_the_last_complete_state_during_a_trace(base, tiny_dir, tmp_path) -> None:
    app = build(str(base))  # the dashboard, opened before the write starts
    client = DashClient(FlaskTransport(app.server.test_client()))
    assert client.request("index", "GET", "/")[0] == 200
    client.load_dependencies()
    long_lived_file = duckdb.connect(str(base / "beamscope.duckdb"), read_only=True)
    long_lived_file.execute(f"SET file_search_path = '{base}'")
    argv = ["trace", "--model", str(tiny_dir), "--corpus", f"task:dates:test:{NEW}", "--warehouse", str(base),
            "--run-name", "b", "--part-size", "3", "--batch-size", "3", "--beam", "3", "--topk", "4",
            "--max-len", "14", "--device", "cpu"]  # fmt: skip
    writer = h.start_cli_child(argv, tmp_path / "trace.log")
    seen, cli_calls, i = [], 0, 0
    after = (2, BASE + NEW)
    while writer.is_alive():
        i += 1
        rows = _sql_console(client, STATE)  # the dashboard's SQL console (its long-lived sandbox)
        seen.append(("dashboard", rows[0]))
        with SafeSQL(base, timeout_s=30) as fresh:  # what every `beamscope sql` opens
            seen.append(("fresh", fresh.run(STATE).df.row(0, named=True)))
        layout = client.page("overview", "/", "?run=a")  # a dashboard page renders meanwhile
        assert layout is not None and "Not found" not in str(layout)
        seen.append(("duckdb-file", dict(zip(("runs", "sentences"), _duckdb_file(base), strict=True))))
        counts = long_lived_file.execute(COUNTS).fetchone()
        seen.append(("long-lived-file", dict(zip(("runs", "sentences"), counts, strict=True))))
        if i % 3 == 1:  # a real `beamscope sql` process
            out = tmp_path / f"sql-{i}.log"
            code = h.run_cli_child(
                ["sql", "--warehouse", str(base), "--format", "csv", STATE], out, timeout=120
            )
            assert code == 0, out.read_text()
            header, values = out.read_text().splitlines()[:2]
            seen.append(("cli", dict(zip(header.split(","), map(int, values.split(",")), strict=True))))
            cli_calls += 1
    writer.join()
    assert writer.exitcode == 0, (tmp_path / "trace.log").read_text()[-2000:]
    mid_write = 0
    with open_warehouse(base) as wh:
        b_total = wh.sql("SELECT count(*) FROM target_steps WHERE run_id = 'b'").item()
    for source, row in seen:
        # never a half-written run, in any view. (One statement's subqueries each read the runs
        # table when they run, so they may fall on either side of the run's completion.)
        assert row["runs"] in (1, 2) and row["sentences"] in (BASE, BASE + NEW), (source, row)
        if "b_steps" in row:
            assert row["b_steps"] in (0, b_total), (source, row)
            mid_write += row["sentences"] == BASE and 0 < row["b_written"] < NEW
    assert mid_write >= 2 and cli_calls >= 1, seen  # the readers did run while parts were landing
    rows = _sql_console(client, STATE)[0]  # the long-lived dashboard sees the new run, whole
    assert (rows["runs"], rows["sentences"]) == after and rows["b_steps"] > 0
    assert _duckdb_file(base) == after
    long_lived_file.close()
