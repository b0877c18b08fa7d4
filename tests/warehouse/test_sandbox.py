"""The SQL sandbox: escapes and abuse are refused (by each layer), real queries answered, limits hold."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import polars as pl
import pytest

from schemas import WarehouseError
from schemas.errors import QueryRefused
from tests.helpers import assert_one_line_error, run_cli
from warehouse import open_warehouse
from warehouse.sandbox import SafeSQL

N_SENTENCES = 144  # 3 runs x 48
SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
# A Python object in scope of the caller: DuckDB's Python client would scan it by name if allowed.
secret_frame = pl.DataFrame({"password": ["hunter2"]})


@pytest.fixture(scope="module")
def sandbox(warehouse_dir):
    with SafeSQL(warehouse_dir, timeout_s=10) as sb:
        yield sb


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A directory outside the warehouse holding a readable CSV and Parquet file."""
    d = tmp_path_factory.mktemp("outside")
    (d / "data.csv").write_text("a,b\n1,2\n")
    pl.DataFrame({"a": [1]}).write_parquet(d / "data.parquet")
    return d


# (id, query) - ``{wh}`` is the warehouse, ``{out}`` a directory outside it, ``{tmp}`` a scratch dir.
ATTACKS = [
    ("read_csv_passwd", "SELECT * FROM read_csv('/etc/passwd', sep = ':')"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('{out}/data.csv')"),
    ("read_text_hostname", "SELECT * FROM read_text('/etc/hostname')"),
    ("read_blob", "SELECT * FROM read_blob('/etc/hostname')"),
    ("read_json_manifest", "SELECT * FROM read_json('{wh}/manifest.json')"),
    ("replacement_scan_passwd", "SELECT * FROM '/etc/passwd'"),
    ("replacement_scan_csv", "FROM '{out}/data.csv'"),
    ("replacement_scan_relative", "SELECT * FROM 'tables/sentences/run=beam4/part-00000.parquet'"),
    ("read_parquet_outside", "SELECT * FROM read_parquet('{out}/data.parquet')"),
    ("read_parquet_inside", "SELECT count(*) FROM read_parquet('{wh}/tables/sentences/*/*.parquet')"),
    ("read_parquet_relative", "SELECT count(*) FROM read_parquet('tables/sentences/*/*.parquet')"),
    ("parquet_metadata", "SELECT * FROM parquet_metadata('{out}/data.parquet')"),
    ("sniff_csv", "SELECT * FROM sniff_csv('/etc/passwd')"),
    ("glob_root", "SELECT * FROM glob('/*')"),
    ("getenv", "SELECT getenv('HOME')"),
    ("current_setting", "SELECT current_setting('allowed_directories')"),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    ("duckdb_views_sql", "SELECT sql FROM duckdb_views()"),
    ("information_schema", "SELECT * FROM information_schema.views"),
    ("system_catalog_function", "SELECT * FROM system.main.duckdb_settings()"),
    ("query_function", "SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')"),
    ("checkpoint_function", "SELECT * FROM checkpoint()"),
    ("setseed", "SELECT setseed(0.5)"),
    ("http_url", "SELECT * FROM read_csv('http://example.com/x.csv')"),
    ("https_replacement_scan", "SELECT * FROM 'https://example.com/x.parquet'"),
    ("s3_url", "SELECT * FROM read_parquet('s3://bucket/x.parquet')"),
    ("copy_view_to", "COPY sentences TO '{tmp}/x.csv'"),
    ("copy_select_to", "COPY (SELECT 1) TO '{tmp}/x.csv'"),
    ("copy_from", "COPY runs FROM '{out}/data.csv'"),
    ("attach", "ATTACH '{tmp}/x.db' AS x"),
    ("detach", "DETACH memory"),
    ("install", "INSTALL httpfs"),
    ("force_install", "FORCE INSTALL httpfs"),
    ("load", "LOAD httpfs"),
    ("set_external_access", "SET enable_external_access = true"),
    ("set_global", "SET GLOBAL allowed_directories = ['/']"),
    ("reset", "RESET allowed_directories"),
    ("set_variable", "SET VARIABLE x = 1"),
    ("pragma", "PRAGMA enable_profiling"),
    ("create_table_as", "CREATE TABLE t AS SELECT * FROM sentences"),
    ("create_macro", "CREATE MACRO leak() AS TABLE SELECT * FROM read_text('/etc/hostname')"),
    ("create_secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')"),
    ("insert", "INSERT INTO runs SELECT * FROM runs"),
    ("update", "UPDATE runs SET status = 'broken'"),
    ("delete", "DELETE FROM runs"),
    ("drop_view", "DROP VIEW sentences"),
    ("alter_view", "ALTER VIEW sentences RENAME TO s"),
    ("multiple_statements", "SELECT 1; DROP VIEW runs"),
    ("statements_after_comment", "SELECT 1 /* ; */ ; -- x\n DROP VIEW runs"),
    ("export_database", "EXPORT DATABASE '{tmp}/export'"),
    ("import_database", "IMPORT DATABASE '{out}'"),
    ("call_table_function", "CALL read_csv('/etc/passwd')"),
    ("call_pragma", "CALL pragma_version()"),
    ("use", "USE raw"),
    ("checkpoint", "CHECKPOINT"),
    ("vacuum", "VACUUM"),
    ("prepare", "PREPARE p AS SELECT 1"),
    ("explain_analyze", "EXPLAIN ANALYZE SELECT * FROM read_text('/etc/hostname')"),
    ("comment_obfuscated_copy", "/*x*/ copy\n\t(SELECT 1)  TO '{tmp}/x.csv'"),
    ("case_and_space_obfuscated", "sElEcT * fRoM\n  ReAd_TeXt (\n'/etc/hostname' ) -- harmless?"),
    ("quoted_function_name", "SELECT * FROM \"read_text\"('/etc/hostname')"),
    ("cte_wrapping_file_read", "WITH p AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM p"),
    ("scalar_subquery_file_read", "SELECT (SELECT count(*) FROM read_text('/etc/hostname')) AS n"),
    ("lateral_file_read", "SELECT * FROM runs, LATERAL (SELECT * FROM read_text(runs.run_id))"),
    ("union_file_read", "SELECT run_id FROM runs UNION ALL SELECT content FROM read_text('/etc/hostname')"),
    ("cte_named_like_a_file", 'WITH "/etc/passwd" AS (SELECT 1) SELECT * FROM "/etc/passwd"'),
    ("describe_file", "DESCRIBE '/etc/passwd'"),
    ("summarize_file_read", "SUMMARIZE SELECT * FROM read_csv('/etc/passwd')"),
    ("show_databases", "SHOW databases"),
    ("python_object", "SELECT * FROM secret_frame"),
    ("pivot_statement", "PIVOT sentences ON split USING count(*)"),
]


def _fill(query: str, wh: Path, out: Path, tmp: Path) -> str:
    return query.replace("{wh}", str(wh)).replace("{out}", str(out)).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("query", [q for _, q in ATTACKS], ids=[i for i, _ in ATTACKS])
def test_attack_is_refused(sandbox, warehouse_dir, outside, tmp_path, query) -> None:
    sql = _fill(query, warehouse_dir, outside, tmp_path)
    with pytest.raises(QueryRefused) as info:
        sandbox.run(sql)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert info.value.reason == "refused", message
    assert "hunter2" not in message and "root:" not in message
    assert list(tmp_path.iterdir()) == []  # nothing was written
    # ... and the executor still answers, with the views intact
    assert sandbox.run("SELECT count(*) FROM sentences").df.item() == N_SENTENCES
    assert sandbox.run("SELECT count(*) FROM runs WHERE status = 'complete'").df.item() == 3


def test_there_are_at_least_twenty_distinct_attacks() -> None:
    assert len({q for _, q in ATTACKS}) >= 20 and len({i for i, _ in ATTACKS}) == len(ATTACKS)


ENGINE_ESCAPES = [
    ("read_text", "SELECT * FROM read_text('/etc/hostname')"),
    ("read_manifest", "SELECT * FROM read_text('{wh}/manifest.json')"),
    ("dotdot_out_of_tables", "SELECT * FROM read_text('{wh}/tables/../manifest.json')"),
    ("read_parquet_outside", "SELECT * FROM read_parquet('{out}/data.parquet')"),
    ("replacement_scan", "SELECT * FROM '{out}/data.csv'"),
    ("glob", "SELECT * FROM glob('/*')"),
    ("http", "SELECT * FROM read_csv('http://example.com/x.csv')"),
    ("copy_to", "COPY (SELECT 1) TO '{tmp}/x.csv'"),
    ("attach", "ATTACH '{tmp}/x.db'"),
    ("install", "INSTALL httpfs"),
    ("load", "LOAD httpfs"),
    ("set_external_access", "SET enable_external_access = true"),
    ("reset_allowed_directories", "RESET allowed_directories"),
    ("unlock", "SET lock_configuration = false"),
    ("search_path", "SET file_search_path = '/etc'"),
    ("python_object", "SELECT * FROM secret_frame"),
]


@pytest.mark.parametrize("query", [q for _, q in ENGINE_ESCAPES], ids=[i for i, _ in ENGINE_ESCAPES])
def test_the_engine_itself_is_locked(sandbox, warehouse_dir, outside, tmp_path, query) -> None:
    """Defence in depth: statements that skip the checks still fail inside the locked DuckDB."""
    cur = sandbox._con.cursor()
    try:
        with pytest.raises(duckdb.Error):
            cur.sql(_fill(query, warehouse_dir, outside, tmp_path)).fetchall()
    finally:
        cur.close()
    assert list(tmp_path.iterdir()) == []


def test_the_engine_still_reads_the_tables_directory(sandbox, warehouse_dir) -> None:
    cur = sandbox._con.cursor()
    try:
        glob = f"{warehouse_dir.resolve()}/tables/sentences/*/*.parquet"
        assert cur.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(N_SENTENCES,)]
    finally:
        cur.close()


LEGIT = [
    ("count", "SELECT count(*) AS n FROM sentences", [{"n": N_SENTENCES}]),
    ("raw_view", "SELECT count(*) AS n FROM raw.sentences", [{"n": N_SENTENCES}]),
    (
        "group_by",
        "SELECT run_id, count(*) AS n FROM sentences GROUP BY run_id ORDER BY run_id",
        [{"run_id": r, "n": 48} for r in ("beam4", "greedy", "lstm")],
    ),
    (
        "join",
        "SELECT r.run_id, count(*) AS n FROM runs r JOIN sentences s USING (run_id) "
        "WHERE r.run_id = 'greedy' GROUP BY ALL",
        [{"run_id": "greedy", "n": 48}],
    ),
    (
        "cte_and_window",
        "WITH x AS (SELECT run_id, sent_id, row_number() OVER (PARTITION BY run_id ORDER BY sent_id) AS k "
        "FROM sentences) SELECT count(*) AS n FROM x WHERE k = 1",
        [{"n": 3}],
    ),
    (
        "trailing_semicolon_and_comment",
        "select count(*) as n from SENTENCES; -- all of them\n",
        [{"n": N_SENTENCES}],
    ),
    ("range", "SELECT sum(range) AS s FROM range(5)", [{"s": 10}]),
    ("unnest", "SELECT count(*) AS n FROM (SELECT unnest([1, 2, 3]))", [{"n": 3}]),
    ("string_mentioning_files", "SELECT 'read_csv(''/etc/passwd''); DROP VIEW x' AS s", None),
]


@pytest.mark.parametrize("query,expected", [(q, e) for _, q, e in LEGIT], ids=[i for i, _, _ in LEGIT])
def test_legitimate_queries_work(sandbox, query, expected) -> None:
    result = sandbox.run(query)
    assert not result.truncated and result.elapsed_s >= 0
    if expected is not None:
        assert result.df.to_dicts() == expected


def test_marts_match_the_warehouse(sandbox, warehouse_dir) -> None:
    with open_warehouse(warehouse_dir) as wh:
        for mart in ("error_summary", "token_confusions", "sentence_errors"):
            ours = sandbox.run(f"SELECT * FROM {mart}").df
            theirs = wh.mart(mart)
            assert ours.height == theirs.height > 0, mart
            assert ours.columns == theirs.columns
        summary = sandbox.run(
            "SELECT run_id, sum(n) AS n FROM error_summary WHERE kind = 'stage' GROUP BY 1 ORDER BY 1"
        ).df
        assert summary["n"].to_list() == [48, 48, 48]


def test_describe_and_show_tables(sandbox) -> None:
    tables = sandbox.run("SHOW TABLES").df["name"].to_list()
    assert {"runs", "sentences", "error_summary"} <= set(tables)
    columns = sandbox.run("DESCRIBE sentences").df["column_name"].to_list()
    assert {"run_id", "sent_id", "source", "hypothesis"} <= set(columns)
    assert "sentences" in sandbox.views


def test_errors_are_one_line_sql_errors(sandbox) -> None:
    for query, needle in [
        ("SELECT nope FROM sentences", "nope"),
        ("SELECT FROM WHERE", "syntax error"),
        ("SELECT 1 +", "syntax error"),
        ("SELECT CAST('x' AS INTEGER)", "Conversion"),
    ]:
        with pytest.raises(QueryRefused) as info:
            sandbox.run(query)
        assert str(info.value).startswith("SQL error: ") and needle in str(info.value)
        assert "\n" not in str(info.value) and info.value.reason == "error"
    with pytest.raises(QueryRefused, match="empty query"):
        sandbox.run("  -- nothing\n")


def test_timeout_interrupts_a_slow_query(warehouse_dir) -> None:
    with SafeSQL(warehouse_dir, timeout_s=1) as sb:
        start = time.perf_counter()
        with pytest.raises(QueryRefused, match=r"^query timed out after 1 s$") as info:
            sb.run(SLOW)
        assert time.perf_counter() - start < 1 + 2
        assert info.value.reason == "timeout"
        assert sb.run("SELECT count(*) FROM sentences").df.item() == N_SENTENCES  # still answers


def test_max_rows_truncates(warehouse_dir) -> None:
    with SafeSQL(warehouse_dir, max_rows=10) as sb:
        query = "SELECT run_id, sent_id FROM sentences ORDER BY run_id DESC, sent_id DESC"
        result = sb.run(query)
        assert result.truncated and result.df.height == 10
        with open_warehouse(warehouse_dir) as wh:
            assert result.df.equals(wh.sql(query).head(10))  # the first rows, in order
        exact = sb.run("SELECT * FROM range(10)")
        assert not exact.truncated and exact.df.height == 10
        assert sb.run("SELECT * FROM range(11)").truncated


def test_one_executor_serves_many_threads(warehouse_dir) -> None:
    # 3 s: a query waits that long for a slot too, and 60 queries share two slots on a busy 2-core CI
    with SafeSQL(warehouse_dir, timeout_s=3, pool_size=3) as sb:

        def ask(i: int) -> tuple[int, int]:
            run = ("beam4", "greedy", "lstm")[i % 3]
            df = sb.run(f"SELECT {i} AS i, count(*) AS n FROM sentences WHERE run_id = '{run}'").df
            return df["i"].item(), df["n"].item()

        slow_outcome: list[str] = []

        def slow() -> None:
            try:
                sb.run(SLOW)
            except QueryRefused as e:
                slow_outcome.append(e.reason)

        t = threading.Thread(target=slow)
        t.start()
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(ask, range(60)))
        t.join()
        assert answers == [(i, 48) for i in range(60)]  # the timer interrupted only its own query
        assert slow_outcome == ["timeout"]


def test_closed_and_foreign_directories(warehouse_dir, tmp_path) -> None:
    sb = SafeSQL(warehouse_dir)
    sb.close()
    with pytest.raises(QueryRefused, match="closed"):
        sb.run("SELECT 1")
    with pytest.raises(WarehouseError, match="not a beamscope warehouse"):
        SafeSQL(tmp_path)


# -- the CLI ---------------------------------------------------------------------------------------

Q = "SELECT run_id, count(*) AS n FROM sentences GROUP BY 1 ORDER BY 1"


def test_cli_sql_out_csv_parquet_json(warehouse_dir, tmp_path) -> None:
    for name in ("r.csv", "r.parquet", "r.json", "r.jsonl"):
        proc = run_cli("sql", "--warehouse", str(warehouse_dir), "--out", str(tmp_path / name), Q)
        assert proc.returncode == 0, proc.stderr
        assert "wrote 3 rows" in proc.stdout
    assert (tmp_path / "r.csv").read_text().splitlines() == ["run_id,n", "beam4,48", "greedy,48", "lstm,48"]
    assert pl.read_parquet(tmp_path / "r.parquet").to_dicts() == [
        {"run_id": r, "n": 48} for r in ("beam4", "greedy", "lstm")
    ]
    assert [row["n"] for row in json.loads((tmp_path / "r.json").read_text())] == [48, 48, 48]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json", "r.jsonl", "r.parquet"]


def test_cli_sql_refuses_with_one_line(warehouse_dir, tmp_path) -> None:
    out = tmp_path / "x.csv"
    proc = run_cli(
        "sql", "--warehouse", str(warehouse_dir), "--out", str(out), "SELECT * FROM read_csv('/etc/passwd')"
    )
    assert_one_line_error(proc, "refused", "read_csv")
    assert list(tmp_path.iterdir()) == []
    assert_one_line_error(
        run_cli("sql", "--warehouse", str(warehouse_dir), "SELECT 1; DROP VIEW runs"), "one statement"
    )
    assert_one_line_error(
        run_cli("sql", "--warehouse", str(warehouse_dir), "--timeout", "1", SLOW), "timed out after 1 s"
    )
    assert_one_line_error(
        run_cli("sql", "--warehouse", str(warehouse_dir), "--out", str(tmp_path / "x.xlsx"), Q), "--out"
    )


def test_cli_sql_max_rows_warns(warehouse_dir) -> None:
    proc = run_cli("sql", "--warehouse", str(warehouse_dir), "--format", "csv", "--max-rows", "2", Q)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["run_id,n", "beam4,48", "greedy,48"]
    assert "cut to the first 2 rows" in proc.stderr
