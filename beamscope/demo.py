"""``beamscope demo``: the whole path on the built-in dates task, from nothing to a warehouse."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.beam import DecodeConfig
from pipeline.models import load_model, resolve_device
from pipeline.neighbours import KINDS, bank_info
from pipeline.trace import TraceConfig, trace
from pipeline.train import TrainConfig, train
from pipeline.writer import build_indexes
from schemas import CheckpointError
from warehouse import open_warehouse, write_duckdb_file
from warehouse.report import error_report, format_report


@dataclass(frozen=True)
class DemoConfig:
    dir: Path
    arch: str = "transformer"
    n_test: int = 2000
    n_train: int = 20000
    minutes: float = 5.0
    device: str = "auto"
    serve: bool = True
    port: int = 8050


def run_demo(cfg: DemoConfig) -> Path:
    """Train (or reuse) the model, trace the test and training splits, build indexes."""
    device = resolve_device(cfg.device)
    model_dir = cfg.dir / "models" / f"dates-{cfg.arch}"
    warehouse = cfg.dir / "warehouse"
    try:
        load_model(model_dir, device)
        print(f"model: {model_dir} (cached)")
    except CheckpointError:
        start = time.perf_counter()
        _, acc = train(TrainConfig(task="dates", arch=cfg.arch, minutes=cfg.minutes), model_dir, device)
        print(
            f"model: {model_dir} trained in {time.perf_counter() - start:.0f}s, "
            f"validation exact match {acc:.1%}"
        )
    runs = []
    # the training sample first: the test run's error blame uses its states as neighbours
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        start = time.perf_counter()
        s = trace(
            TraceConfig(
                model=str(model_dir),
                corpus=f"task:dates:{split}:{n}",
                warehouse=str(warehouse),
                decoding=DecodeConfig(beam=5, max_len=20),
                device=cfg.device,
                agreement="all",  # a small bank: the per-token agreement columns are cheap here
            )
        )
        runs.append(s.run_id)
        print(f"traced {s.run_id}: {s.n_sentences} sentences in {time.perf_counter() - start:.0f}s")
    for r in build_indexes(warehouse, runs):
        print(f"index {r.table}: {r.rows} vectors" + (f", {r.params['scalar_indexes']}" if r.built else ""))
    for kind in KINDS:  # built by the test run's trace, which searched them
        info = bank_info(warehouse, runs[0], kind)
        print(f"neighbour bank: {info.describe()}, built in {info.build_seconds:.1f}s")
    write_duckdb_file(warehouse)
    with open_warehouse(warehouse) as wh:
        report = error_report(wh, runs[1], top=5)
    print(f"\nwarehouse: {warehouse.resolve()}\n")
    print(format_report(report))
    query = "SELECT * FROM sentences WHERE NOT exact_match LIMIT 5"
    print(f'\ntry: beamscope sql --warehouse {warehouse} "{query}"')
    print(f"     beamscope errors --warehouse {warehouse} --run {runs[1]}")
    if cfg.serve:  # a fresh process: this one has DuckDB and LanceDB loaded, which gunicorn must not fork
        sys.stdout.flush()
        serve = ["serve", "--warehouse", str(warehouse), "--port", str(cfg.port), "--device", cfg.device]
        os.execv(
            sys.executable,
            [sys.executable, "-c", "import sys; from beamscope.cli import main; sys.exit(main())", *serve],
        )
    return warehouse
