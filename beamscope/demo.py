"""``beamscope demo``: the whole path on the built-in tasks, from nothing to a warehouse with errors.

Two models, both of the paper's kinds: the dates Transformer (nearly always right) and the numbers
LSTM with attention (English -> German number words, where attention runs backwards), trained only
so far that about one test sentence in ten is wrong. Each traces a training sample first (the
neighbour bank its test run's blame searches), then the test split with beam 5; the numbers test
split is also decoded greedily, so search errors and the compare page have material. The numbers
beam-5 run is traced last: the overview opens on it. Then the numbers errors are attributed
(integrated gradients), both test runs perturbed and their blame calibrated on planted faults
(pages never open on a perturbation or fault run).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from beamscope.calibrate import calibrate_run
from pipeline.attribute import AttributeConfig, attribute_run
from pipeline.attribution import Method
from pipeline.beam import DecodeConfig
from pipeline.fault_runs import FaultConfig
from pipeline.models import load_model, resolve_device
from pipeline.neighbours import KINDS, bank_info
from pipeline.perturb_run import PerturbConfig, perturb_run
from pipeline.trace import TraceConfig, trace
from pipeline.train import TrainConfig, train
from pipeline.writer.indexes import build_indexes
from schemas import CheckpointError
from warehouse import open_warehouse, write_duckdb_file
from warehouse.perturbations import format_summary, perturbation_summary
from warehouse.report import error_report, format_breakdown, format_report
from warehouse.selection import sentence_ids


@dataclass(frozen=True)
class DemoModel:
    """One model of the demo: how it is trained and how its test split is decoded."""

    train: TrainConfig
    max_len: int
    beams: tuple[int, ...]  # test-split decodings; the last is the model's main run

    @property
    def name(self) -> str:
        return f"{self.train.task}-{self.train.arch}"


DEMO_MODELS = (
    DemoModel(TrainConfig(task="dates", arch="transformer"), max_len=20, beams=(5,)),
    # 410 steps of a 64-wide LSTM: ~90% exact match on the test split (measured greedy: 300 steps
    # 44%, 380 81%, 410 89%, 450 92%, 600 100%); an error rate users meet in real models
    DemoModel(TrainConfig(task="numbers", arch="lstm", d_model=64, max_steps=410), max_len=40, beams=(1, 5)),
)


@dataclass(frozen=True)
class DemoConfig:
    dir: Path
    n_test: int = 2000
    n_train: int = 10000
    minutes: float = 5.0  # training budget of each model
    device: str = "auto"
    serve: bool = True
    port: int = 8050


def run_demo(cfg: DemoConfig) -> Path:
    """Train (or reuse) the models, trace their training and test splits, build indexes."""
    start = time.perf_counter()
    warehouse = cfg.dir / "warehouse"
    trains: list[str] = []
    tests: list[str] = []
    for spec in DEMO_MODELS:
        model_dir = _model(cfg, spec)
        # the training sample first: the test runs' blame searches its states
        trains.append(_trace(cfg, spec, model_dir, warehouse, "train", cfg.n_train, 5))
        tests += [_trace(cfg, spec, model_dir, warehouse, "test", cfg.n_test, beam) for beam in spec.beams]
    why = _why(cfg, warehouse, tests)
    _calibrate(cfg, warehouse, [run for run in tests if not run.endswith(".beam1")])
    for r in build_indexes(warehouse, trains + tests):
        print(f"index {r.table}: {r.rows} vectors" + (f", {r.params['scalar_indexes']}" if r.built else ""))
    for run, kind in ((run, kind) for run in trains for kind in KINDS):  # built by the test runs' traces
        if info := bank_info(warehouse, run, kind):
            print(f"neighbour bank of {run}: {info.describe()}, built in {info.build_seconds:.1f}s")
    write_duckdb_file(warehouse)
    with open_warehouse(warehouse) as wh:
        print(f"\nwarehouse: {warehouse.resolve()}\n")
        print(format_report(error_report(wh, tests[-1], top=5)))
        print("\nstages and tags of every test run:")
        print(format_breakdown([error_report(wh, run) for run in tests]))
        _print_why(wh, tests[-1], why)
    print(f"\ndemo built in {time.perf_counter() - start:.0f}s")
    query = "SELECT * FROM sentences WHERE NOT exact_match LIMIT 5"
    print(f'\ntry: beamscope sql --warehouse {warehouse} "{query}"')
    print(f"     beamscope errors --warehouse {warehouse} --run {tests[-1]}")
    print(f"     beamscope compare --warehouse {warehouse} {tests[-2]} {tests[-1]}")
    if cfg.serve:
        _serve(cfg, warehouse)
    return warehouse


# what the demo attributes and perturbs: (task, perturbation kinds, sentences per kind)
ATTRIBUTED = "NOT exact_match OR sent_id < 200"  # every error, and correct sentences to compare with
PERTURBED = {"dates": ("reformat", "case", "punct"), "numbers": ("plus_one",)}
PERTURB_SENTENCES = 1000


CALIBRATION_FAULTS = 200  # per stage and model


def _calibrate(cfg: DemoConfig, warehouse: Path, runs: list[str]) -> None:
    """Plant faults in each model's beam-5 test run and measure its blame (the overview and
    ``beamscope errors`` show the precision of each stage beside the stage breakdown)."""
    for run in runs:
        s = calibrate_run(FaultConfig(str(warehouse), run, n=CALIBRATION_FAULTS, device=cfg.device))
        met = s.calibration.blamed("recorded")
        planted = s.calibration.faults.planted
        print(
            f"calibrated the blame of {run} on {len(planted)} planted faults in {s.seconds:.0f}s: "
            f"{(met == planted).mean():.0%} blamed on the planted stage (beamscope calibrate --run {run})"
        )


def _why(cfg: DemoConfig, warehouse: Path, tests: list[str]) -> list[str]:
    """Integrated gradients on the numbers beam-5 run (its errors and 200 more sentences), and the
    perturbation runs of each task's beam-5 test run; returns the perturbation runs."""
    start = time.perf_counter()
    numbers = tests[-1]
    chosen = sentence_ids(str(warehouse), numbers, ATTRIBUTED)
    s = attribute_run(
        AttributeConfig(str(warehouse), numbers, Method("ig", 32), chosen, ATTRIBUTED, cfg.device)
    )
    print(
        f"attributed {s.n_tokens} tokens of {s.n_sentences} sentences of {numbers} (ig) in {s.seconds:.0f}s"
    )
    runs = []
    for run in (r for r in tests if not r.endswith(".beam1")):
        task = next(t for t in PERTURBED if f".{t}-test-" in run)
        for kind in PERTURBED[task]:
            where = f"sent_id < {PERTURB_SENTENCES}"
            p = perturb_run(
                PerturbConfig(
                    str(warehouse),
                    run,
                    kind,
                    sentence_ids(str(warehouse), run, where),
                    where,
                    device=cfg.device,
                ),
                progress=False,
            )
            runs.append(p.run_id)
    print(f"perturbation runs traced in {time.perf_counter() - start:.0f}s (with the attribution)")
    return runs


def _print_why(wh, attributed: str, perturbed: list[str]) -> None:  # noqa: ANN001
    """Attention against attribution by stage, and the perturbation summaries."""
    summary = wh.mart("attention_attribution_summary", attributed).filter(pl.col("grouping") == "stage")
    print(f"\nattention vs attribution in {attributed} (ig; share of steps whose most attended source")
    print("token is the most attributed one, and mean Spearman correlation), by stage:")
    for r in summary.iter_rows(named=True):
        div = "-" if r["divergence_top_agreement"] is None else f"{r['divergence_top_agreement']:.0%}"
        print(
            f"  {r['group']:11s} {r['sentences']:5d} sentences {r['steps']:6d} steps  top agree "
            f"{r['top_agreement']:.0%}  spearman {r['mean_spearman']:.2f}  (at divergence: top agree {div})"
        )
    print("\nperturbations:")
    for run in perturbed:
        print("  " + format_summary(perturbation_summary(wh, run)))


def _model(cfg: DemoConfig, spec: DemoModel) -> Path:
    """The model's checkpoint directory, trained first when there is none (or another one)."""
    model_dir = cfg.dir / "models" / spec.name
    train_cfg = replace(spec.train, minutes=cfg.minutes)
    try:
        model = load_model(model_dir, resolve_device(cfg.device))
        if model.meta.get("train") == dataclasses.asdict(train_cfg):
            print(f"model: {model_dir} (cached)")
            return model_dir
    except CheckpointError:
        pass
    start = time.perf_counter()
    _, acc = train(train_cfg, model_dir, resolve_device(cfg.device))
    took = time.perf_counter() - start
    print(f"model: {model_dir} trained in {took:.0f}s, validation exact match {acc:.1%}")
    return model_dir


def _trace(  # noqa: PLR0913
    cfg: DemoConfig, spec: DemoModel, model_dir: Path, warehouse: Path, split: str, n: int, beam: int
) -> str:
    """Trace ``n`` sentences of ``split`` with beam ``beam`` (beam 5 keeps the default run name)."""
    start = time.perf_counter()
    corpus = f"task:{spec.train.task}:{split}:{n}"
    name = f"{spec.name}.{spec.train.task}-{split}-{n}.{split}" + ("" if beam == 5 else f".beam{beam}")
    s = trace(
        TraceConfig(
            model=str(model_dir),
            corpus=corpus,
            warehouse=str(warehouse),
            run_name=name,
            decoding=DecodeConfig(beam=beam, max_len=spec.max_len),
            device=cfg.device,
            agreement="all",  # small banks: the per-token agreement columns are cheap here
        )
    )
    print(f"traced {s.run_id}: {s.n_sentences} sentences (beam {beam}) in {time.perf_counter() - start:.0f}s")
    return s.run_id


def _serve(cfg: DemoConfig, warehouse: Path) -> None:
    """Replace this process by ``beamscope serve``: this one has DuckDB and LanceDB loaded, which
    gunicorn must not fork."""
    sys.stdout.flush()
    serve = ["serve", "--warehouse", str(warehouse), "--port", str(cfg.port), "--device", cfg.device]
    os.execv(
        sys.executable,
        [sys.executable, "-c", "import sys; from beamscope.cli import main; sys.exit(main())", *serve],
    )
