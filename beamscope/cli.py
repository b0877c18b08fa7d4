"""The ``beamscope`` command: one verb per step, errors printed as one line at this edge."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from beamscope import __version__
from schemas import BeamscopeError, ConfigError

Handler = Callable[[argparse.Namespace], int]


def _verb(sub: argparse._SubParsersAction, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")


def _add_bank_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bank-size",
        type=int,
        default=None,
        help="keep at most N states per kind in a training run's neighbour bank (seeded uniform sample; "
        "default: all)",
    )


def _add_engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (see README: Scale-out on Ray)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: decode in this process; ray: in an actor pool of model replicas on a Ray cluster",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: auto (the running one) or HOST:PORT (default: start one here)",
    )
    g.add_argument("--workers", type=int, default=1, help="model replicas (Ray actors)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker holds")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker holds")


def _engine(a: argparse.Namespace):
    from pipeline.ray_engine import RayEngine

    if a.engine == "local":
        ray_only = {
            "--address": a.address,
            "--workers": a.workers != 1,
            "--gpus-per-worker": a.gpus_per_worker,
            "--cpus-per-worker": a.cpus_per_worker != 1.0,
        }
        given = [k for k, v in ray_only.items() if v]
        if given:
            raise ConfigError(f"{', '.join(given)} need --engine ray")
        return None
    return RayEngine(a.address, a.workers, a.gpus_per_worker, a.cpus_per_worker)  # checked by trace


def _add_decoding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=5, help="beam width (1 = greedy)")
    p.add_argument("--topk", type=int, default=10, help="top-k predictions recorded per step")
    p.add_argument("--max-len", type=int, default=64, help="most target tokens per sentence")
    p.add_argument("--length-penalty", type=float, default=1.0, help="score = logprob / length**penalty")
    p.add_argument("--per-head", action="store_true", help="store attention per layer and head too")
    p.add_argument("--all-layers", action="store_true", help="store encoder states of every layer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beamscope", description="Trace warehouse and visual debugger for seq2seq models."
    )
    parser.add_argument("--version", action="version", version=f"beamscope {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = _verb(
        sub,
        "train",
        "train a built-in model on a built-in task",
        "  beamscope train --task dates --arch transformer --out models/dates\n"
        "  beamscope train --task numbers --arch lstm --out models/numbers --minutes 3\n",
    )
    p.add_argument("--task", default="dates", help="built-in task: dates | numbers")
    p.add_argument("--arch", default="transformer", help="transformer | lstm")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--steps", type=int, default=None, help="most optimisation steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_device(p)
    p.set_defaults(handler=_train)

    p = _verb(
        sub,
        "trace",
        "decode a corpus with the traced beam search into a warehouse",
        "  beamscope trace --model models/dates --corpus task:dates:test:2000 --warehouse wh\n"
        "  beamscope trace --model models/dates --corpus my.txt --refs my.ref.txt --warehouse wh\n"
        "  beamscope trace --model models/dates --corpus pairs.tsv --warehouse wh --beam 1\n"
        "corpus SPEC: task:NAME:SPLIT[:N] | FILE.txt [--refs FILE] | FILE.tsv | FILE.jsonl | FILE.parquet\n"
        "A trace that is interrupted resumes when started again with the same arguments.\n",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--corpus", required=True, help="corpus SPEC (see below)")
    p.add_argument("--refs", default=None, help="reference file for a .txt corpus (one line per source)")
    p.add_argument("--warehouse", required=True, help="warehouse directory (created if missing)")
    p.add_argument("--split", default=None, help="split label (default: the task split, or test)")
    p.add_argument("--run-name", default=None, help="run id (default: MODEL.CORPUS.SPLIT)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--part-size", type=int, default=1024, help="sentences per Parquet part")
    p.add_argument("--no-vectors", action="store_true", help="do not store encoder/decoder states")
    p.add_argument(
        "--neighbours-run",
        default="auto",
        help="training run whose states the encoder/decoder blame rules use (auto: the newest traced "
        "train-split run of the same model; none: off)",
    )
    p.add_argument(
        "--agreement",
        choices=("all", "divergence"),
        default="divergence",
        help="neighbour agreement only of the states the blame reads at a wrong sentence's first "
        "divergence step (divergence: the other per-token agreement values stay NULL) or of every "
        "state (all)",
    )
    _add_bank_size(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for decoding (default: all cores but one, at most 8)",
    )
    _add_engine(p)
    _add_decoding(p)
    _add_device(p)
    p.set_defaults(handler=_trace)

    p = _verb(
        sub,
        "index",
        "build ANN indexes over the stored encoder/decoder states",
        "  beamscope index --warehouse wh\n  beamscope index --warehouse wh --run dates.train --min-rows 0\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", action="append", default=None, help="run to index (repeatable; default all)")
    p.add_argument(
        "--min-rows", type=int, default=None, help="index only tables with at least this many rows"
    )
    _add_bank_size(p)
    p.set_defaults(handler=_index)

    p = _verb(
        sub,
        "migrate",
        "upgrade a warehouse written by an older beamscope to this schema version, in place",
        "  beamscope migrate --warehouse wh\n"
        "Rewrites the Parquet parts of the tables that gained columns (new columns are NULL; vectors are\n"
        "untouched), then bumps the manifest. Safe to interrupt and run again; a no-op when up to date.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.set_defaults(handler=_migrate)

    p = _verb(
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
    p.set_defaults(handler=_sql)

    p = _verb(
        sub,
        "errors",
        "report the error statistics of a run",
        "  beamscope errors --warehouse wh\n"
        "  beamscope errors --warehouse wh --run dates-transformer.dates-test-2000.test --format json\n"
        "Stages and tags are defined in pipeline/errors.py (see README, 'Error taxonomy').\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", default=None, help="run id (default: the newest run)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--top", type=int, default=10, help="rows of confusions and worst sentences")
    p.set_defaults(handler=_errors)

    p = _verb(
        sub,
        "compare",
        "compare two runs over the same corpus (paired bootstrap, fixed/broken sentences)",
        "  beamscope compare --warehouse wh greedy beam5\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(handler=_compare)

    p = _verb(
        sub,
        "serve",
        "serve the dashboard over a warehouse",
        "  beamscope serve --warehouse wh\n"
        "  BEAMSCOPE_TOKEN=secret beamscope serve --warehouse wh --host 0.0.0.0 --port 8050\n"
        "  beamscope serve --warehouse wh --model models/dates-transformer --device cpu\n"
        "Binds to 127.0.0.1 unless told otherwise; any other address requires a token\n"
        "(--token or BEAMSCOPE_TOKEN), sent as ?token=... once (then a cookie) or as a Bearer header.\n"
        "What-if re-decoding loads each run's model from the path its run recorded; --model\n"
        "overrides that path for every run.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--token", default=None, help="access token (default: $BEAMSCOPE_TOKEN)")
    p.add_argument("--model", default=None, help="model directory for what-if (default: each run's own)")
    p.add_argument(
        "--workers", type=int, default=None, help="server processes (default: one a core, at most 4)"
    )
    p.add_argument("--threads", type=int, default=32, help="threads per server process")
    _add_device(p)
    p.set_defaults(handler=_serve)

    p = _verb(
        sub,
        "demo",
        "train the dates Transformer and the numbers LSTM (if not cached), trace their training and test "
        "splits (numbers: greedy and beam 5), index, serve the dashboard",
        "  beamscope demo\n  beamscope demo --dir /tmp/beamscope-demo --test 500 --train 2000\n",
    )
    p.add_argument("--dir", default="demo", help="where the model and the warehouse go")
    p.add_argument("--test", type=int, default=2000, help="test sentences to trace per model")
    p.add_argument("--train", type=int, default=10000, help="training sentences traced per model")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget per model")
    p.add_argument("--no-serve", action="store_true", help="stop after tracing; do not serve the dashboard")
    p.add_argument("--port", type=int, default=8050, help="dashboard port (127.0.0.1)")
    _add_device(p)
    p.set_defaults(handler=_demo)
    return parser


def _train(a: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.models import resolve_device
    from pipeline.train import TrainConfig, train

    cfg = TrainConfig(task=a.task, arch=a.arch, seed=a.seed, minutes=a.minutes)
    overrides = {"max_steps": a.steps, "batch_size": a.batch_size}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    _, acc = train(cfg, Path(a.out), resolve_device(a.device))
    print(f"saved {a.out}  (validation exact match {acc:.1%})")
    return 0


def _decoding(a: argparse.Namespace):
    from pipeline.beam import DecodeConfig

    return DecodeConfig(
        beam=a.beam,
        topk=a.topk,
        max_len=a.max_len,
        length_penalty=a.length_penalty,
        per_head=a.per_head,
        all_layers=a.all_layers,
    )


def _trace(a: argparse.Namespace) -> int:
    from pipeline.trace import TraceConfig, trace
    from warehouse import write_duckdb_file

    s = trace(
        TraceConfig(
            model=a.model,
            corpus=a.corpus,
            refs=a.refs,
            warehouse=a.warehouse,
            split=a.split,
            run_name=a.run_name,
            decoding=_decoding(a),
            batch_size=a.batch_size,
            part_size=a.part_size,
            vectors=not a.no_vectors,
            neighbours_run=None if a.neighbours_run == "none" else a.neighbours_run,
            agreement=a.agreement,
            bank_size=a.bank_size,
            threads=a.threads,
            device=a.device,
            engine=_engine(a),
        )
    )
    write_duckdb_file(s.warehouse)
    state = "already complete" if s.already_complete else "complete"
    print(f"run {s.run_id}: {s.n_sentences} sentences, {s.n_skipped} skipped ({state}) -> {s.warehouse}")
    return 0


def _index(a: argparse.Namespace) -> int:
    from pipeline.neighbours import KINDS, build_bank
    from pipeline.writer import DEFAULT_MIN_ROWS, build_indexes
    from schemas.layout import warehouse_root
    from warehouse import open_warehouse

    with open_warehouse(a.warehouse) as wh:
        runs = [wh.resolve_run(r) for r in a.run] if a.run else wh.run_ids()
        train = set(
            wh.sql(
                "SELECT run_id FROM runs WHERE split = 'train' "
                "AND coalesce(json_extract(options, '$.vectors')::BOOLEAN, true)"
            )["run_id"].to_list()
        )
    min_rows = DEFAULT_MIN_ROWS if a.min_rows is None else a.min_rows
    for r in build_indexes(warehouse_root(a.warehouse), runs, min_rows):
        what = f"{r.params['scalar_indexes']} built in {r.seconds:.1f}s" if r.built else "no index needed"
        print(f"{r.table}: {r.rows} vectors, {what}")
    for run in (r for r in runs if r in train):
        for kind in KINDS:
            info = build_bank(warehouse_root(a.warehouse), run, kind, a.bank_size)
            print(f"neighbour bank: {info.describe()}, built in {info.build_seconds:.1f}s")
    return 0


def _migrate(a: argparse.Namespace) -> int:
    from pipeline.migrate import MigrateConfig, migrate
    from warehouse import write_duckdb_file

    r = migrate(MigrateConfig(warehouse=a.warehouse))
    if r.from_version == r.to_version:
        print(f"{a.warehouse}: already at schema version {r.to_version}; nothing to do")
        return 0
    write_duckdb_file(a.warehouse)
    print(
        f"{a.warehouse}: migrated from schema version {r.from_version} to {r.to_version} "
        f"({r.parts_rewritten} of {r.parts_checked} parts rewritten)"
    )
    return 0


def _sql(a: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from pipeline.writer import atomic_path
    from warehouse.sandbox import SafeSQL
    from warehouse.views import damaged_part_error

    writers: dict[str, Callable[[pl.DataFrame, Path], object]] = {
        ".csv": lambda df, p: df.write_csv(p),
        ".parquet": lambda df, p: df.write_parquet(p),
        ".json": lambda df, p: df.write_json(p),
        ".jsonl": lambda df, p: df.write_ndjson(p),
        ".ndjson": lambda df, p: df.write_ndjson(p),
    }
    out = Path(a.out) if a.out else None
    if out is not None and out.suffix.lower() not in writers:
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
            writers[out.suffix.lower()](df, tmp)
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


def _errors(a: argparse.Namespace) -> int:
    from warehouse import open_warehouse
    from warehouse.report import error_report, format_report

    with open_warehouse(a.warehouse) as wh:
        report = error_report(wh, a.run, a.top)
    print(report.to_json() if a.format == "json" else format_report(report))
    return 0


def _compare(a: argparse.Namespace) -> int:
    from warehouse import open_warehouse
    from warehouse.compare import compare_runs, format_comparison

    with open_warehouse(a.warehouse) as wh:
        print(format_comparison(compare_runs(wh, a.run_a, a.run_b, a.samples), a.top, a.samples))
    return 0


def _serve(a: argparse.Namespace) -> int:
    from dashboard.wsgi import serve

    serve(
        a.warehouse,
        a.host,
        a.port,
        a.token,
        model=a.model,
        device=a.device,
        workers=a.workers,
        threads=a.threads,
    )
    return 0


def _demo(a: argparse.Namespace) -> int:
    from beamscope.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            dir=Path(a.dir),
            n_test=a.test,
            n_train=a.train,
            minutes=a.minutes,
            device=a.device,
            serve=not a.no_serve,
            port=a.port,
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LANCEDB_LOG", "error")  # Lance's k-means warnings are not for users
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BeamscopeError as e:
        print(f"beamscope: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"beamscope: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("beamscope: interrupted (a trace resumes when started again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
