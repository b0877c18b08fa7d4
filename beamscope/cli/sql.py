"""``beamscope sql``: run one read-only SELECT against the warehouse views (sandboxed)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from beamscope.cli.options import Subparsers, add_verb
from schemas import ConfigError

if TYPE_CHECKING:
    import polars as pl

WRITERS: dict[str, Callable[[pl.DataFrame, Path], object]] = {
    ".csv": lambda df, p: df.write_csv(p),
    ".parquet": lambda df, p: df.write_parquet(p),
    ".json": lambda df, p: df.write_json(p),
    ".jsonl": lambda df, p: df.write_ndjson(p),
    ".ndjson": lambda df, p: df.write_ndjson(p),
}  # --out FILE, by suffix


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "sql",
        "run one read-only SELECT against the warehouse views (sandboxed)",
        '  beamscope sql --warehouse wh "SELECT run_id, n_sentences FROM runs"\n'
        '  beamscope sql --warehouse wh --format csv "SELECT * FROM sentences WHERE NOT exact_match"\n'
        '  beamscope sql --warehouse wh --out errors.parquet "SELECT * FROM sentence_errors"\n'
        "tables: runs sentences source_tokens target_steps reference_steps attention beam_nodes skipped\n"
        "marts: sentence_errors error_summary token_confusions bucket_accuracy attention_coverage\n"
        "Only SELECT (and SHOW TABLES / DESCRIBE / SUMMARIZE) over these views runs: no files, no writes.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("query")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output on stdout")
    p.add_argument(
        "--out", default=None, help="write the result to FILE instead: .csv, .parquet, .json or .jsonl"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before the query is stopped")
    p.add_argument(
        "--max-rows", type=int, default=10_000, help="most rows returned (more are cut, with a warning)"
    )
    return p


def run(a: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from pipeline.writer.files import atomic_path
    from warehouse.sandbox import SafeSQL
    from warehouse.views import damaged_part_error

    out = Path(a.out) if a.out else None
    if out is not None and out.suffix.lower() not in WRITERS:
        raise ConfigError(f"--out {a.out}: use a .csv, .parquet, .json or .jsonl file")
    if not a.timeout > 0:
        raise ConfigError("--timeout must be positive")
    if a.max_rows < 1:
        raise ConfigError("--max-rows must be at least 1")
    try:
        sandbox = SafeSQL(a.warehouse, timeout_s=a.timeout, max_rows=a.max_rows)
    except duckdb.Error as e:  # a view over a part file DuckDB cannot read
        raise damaged_part_error(e) or e from None
    with sandbox:
        result = sandbox.run(a.query)
    df = result.df
    if out is not None:
        with atomic_path(out) as tmp:
            WRITERS[out.suffix.lower()](df, tmp)
        print(f"wrote {df.height} rows to {out}")
    elif a.format == "csv":
        sys.stdout.write(df.write_csv())
    elif a.format == "json":
        sys.stdout.write(df.write_ndjson())
    else:
        with pl.Config(tbl_rows=50, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(df)
    if result.truncated:
        print(f"beamscope: warning: result cut to the first {a.max_rows} rows (--max-rows)", file=sys.stderr)
    return 0
