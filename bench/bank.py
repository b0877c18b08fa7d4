"""Neighbour agreement at scale: trace cost and memory against the size of the training bank.

The same model (numbers Transformer, trained here for 2 minutes, so it makes real errors) traces
the same 2,000 test sentences with no bank and with banks of 5,000 / 40,000 / 200,000 traced
training sentences. Every trace runs in its own process (torch 2 threads, like ``make demo``),
after the bank is built, and reports its wall time and peak RSS. On the 40k bank the same trace
is repeated with an exact (flat) bank: agreement within 0.1 of exact search and the same blamed
stage are counted over every row / wrong sentence.

Training warehouses are cached under ``.beamscope/bench/bank`` (the 200k one takes minutes).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import CACHE
from pipeline.beam import DecodeConfig
from pipeline.models import load_model
from pipeline.neighbours import KINDS, build_bank
from pipeline.trace import TraceConfig, trace
from pipeline.train import TrainConfig, train
from schemas import CheckpointError
from warehouse import open_warehouse

HERE = CACHE / "bank"
TEST = "task:numbers:test:2000"
BANKS = (5_000, 40_000, 200_000)
DECODING = DecodeConfig(beam=5, max_len=40)
THREADS = 2


def numbers_model() -> Path:
    path = HERE / "numbers-transformer"
    try:
        load_model(path, torch.device("cpu"))
    except CheckpointError:
        train(TrainConfig(task="numbers", arch="transformer", minutes=2.0), path, torch.device("cpu"))
    return path


def _trace(model: Path, corpus: str, wh: Path, run: str, neighbours: str | None, **kw) -> None:
    cfg = TraceConfig(
        model=str(model),
        corpus=corpus,
        warehouse=str(wh),
        run_name=run,
        decoding=DECODING,
        device="cpu",
        neighbours_run=neighbours,
        **kw,
    )
    trace(cfg, progress=False)


def worker(model: str, wh: str, run: str, neighbours: str, agreement: str) -> None:
    """One timed trace in this process: prints seconds and peak RSS (MB) as JSON."""
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    _trace(
        Path(model), TEST, Path(wh), run, None if neighbours == "none" else neighbours, agreement=agreement
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": rss}))


def timed(model: Path, wh: Path, run: str, neighbours: str, agreement: str = "all") -> dict:
    """A trace of the test corpus in a fresh process (its run removed first)."""
    _drop_run(wh, run)
    args = [str(model), str(wh), run, neighbours, agreement]
    out = subprocess.run(
        [sys.executable, "-m", "bench.bank", "worker", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _drop_run(wh: Path, run: str) -> None:
    """Forget a run of a benchmark warehouse (its files, vectors and manifest entry)."""
    manifest = wh / "manifest.json"
    if not manifest.exists():
        return
    for d in (wh / "tables").glob(f"*/run={run}"):
        shutil.rmtree(d)
    for d in (wh / "vectors").glob(f"*__{run}.lance"):
        shutil.rmtree(d)
    m = json.loads(manifest.read_text())
    m["runs"].pop(run, None)
    manifest.write_text(json.dumps(m))


def training_warehouse(model: Path, size: int) -> Path:
    wh = HERE / f"wh-{size}"
    _trace(model, f"task:numbers:train:{size}", wh, "train", None)
    return wh


def compare(wh: Path, run: str, exact: str) -> dict[str, float]:
    """Share of agreement values within 0.1 of exact search, and of equal blamed stages."""
    with open_warehouse(wh) as w:
        equal, total = 0, 0
        for table, cols in (
            ("source_tokens", ("nn_agreement",)),
            ("target_steps", ("nn_agreement", "nn_ref_agreement")),
            ("reference_steps", ("nn_agreement",)),
        ):
            keys = "sent_id, src_pos" if table == "source_tokens" else "sent_id, step"
            for col in cols:
                f = w.sql(
                    f"SELECT a.{col} AS a, b.{col} AS b FROM {table} a JOIN {table} b USING ({keys}) "
                    f"WHERE a.run_id = ? AND b.run_id = ? AND b.{col} IS NOT NULL",
                    [run, exact],
                )
                equal += int((np.abs(f["a"].to_numpy() - f["b"].to_numpy()) <= 0.1 + 1e-6).sum())
                total += f.height
        blame = w.sql(
            "SELECT a.blamed_stage = b.blamed_stage AS same "
            "FROM sentences a JOIN sentences b USING (sent_id) "
            "WHERE a.run_id = ? AND b.run_id = ? AND NOT b.exact_match",
            [run, exact],
        )
    return {
        "agreement_rows": total,
        "agreement_equal": equal / max(total, 1),
        "wrong_sentences": blame.height,
        "blame_equal": float(blame["same"].mean()) if blame.height else float("nan"),
    }


def main(device_name: str = "cpu") -> dict:
    del device_name  # CPU figures: the targets are about this 2-core machine
    model = numbers_model()
    rows = []
    base = None
    for size in BANKS:
        wh = training_warehouse(model, size)
        if base is None:
            base = timed(model, wh, "test-none", "none")
        built = [build_bank(wh, "train", kind) for kind in KINDS]
        row = {
            "bank": size,
            "states": sum(b.states for b in built),
            "build_s": sum(b.build_seconds for b in built),
        }
        row["index"] = built[1].index
        row |= timed(model, wh, "test", "train")
        row |= {f"divergence_{k}": v for k, v in timed(model, wh, "test-div", "train", "divergence").items()}
        if size == 40_000:
            for kind in KINDS:
                build_bank(wh, "train", kind, index="Flat")
            timed(model, wh, "test-exact", "train")
            row |= compare(wh, "test", "test-exact")
            for kind in KINDS:
                build_bank(wh, "train", kind)
        rows.append(row)
    _print(base, rows)
    return {"no_bank": base, "banks": rows}


def _print(base: dict, rows: list[dict]) -> None:
    print(
        f"== neighbour banks (numbers Transformer, {TEST}, beam {DECODING.beam}, {THREADS} torch threads) =="
    )
    print(f"no bank: {base['seconds']:.1f} s, peak RSS {base['rss_mb']:.0f} MB")
    print(
        "bank (sentences)  states     index            build s  trace s  x no bank  RSS MB"
        "  | divergence only: s, x"
    )
    for r in rows:
        print(
            f"{r['bank']:>16,}  {r['states']:>9,}  {r['index']:<16} {r['build_s']:7.1f}  "
            f"{r['seconds']:7.1f}  "
            f"{r['seconds'] / base['seconds']:8.2f}x  {r['rss_mb']:6.0f}  | {r['divergence_seconds']:6.1f} "
            f"{r['divergence_seconds'] / base['seconds']:5.2f}x"
        )
    big, small = rows[-1], rows[0]
    print(f"largest / smallest bank trace: {big['seconds'] / small['seconds']:.2f}x (target <= 1.15x)")
    for r in rows:
        if "agreement_equal" in r:
            print(
                f"{r['bank']:,} bank vs exact search: agreement within 0.1 on {r['agreement_equal']:.2%} of "
                f"{r['agreement_rows']:,} values; same blamed stage for {r['blame_equal']:.2%} of "
                f"{r['wrong_sentences']} wrong sentences"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(*sys.argv[2:])
    elif sys.argv[1:2] == ["prepare"]:  # the cached model and training warehouses only
        for size in BANKS:
            training_warehouse(numbers_model(), size)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
        main()
