"""Neighbour agreement at scale: trace cost and memory against the size of the training bank.

The same model (numbers Transformer, trained here for 2 minutes, so it makes real errors) traces
the same 2,000 test sentences with no bank and with banks of 5,000 / 40,000 / 200,000 traced
training sentences. Every trace runs in its own process, after the bank is built, and reports its
wall time and peak RSS; the traces are interleaved and each figure is the best of ``REPEATS``.
That model makes no errors on the test corpus, so agreement and blame through the default bank
are compared with an exact (flat) bank on a model trained for 300 steps only (and its own
20,000-sentence bank): agreement within 0.1 of exact search and the same blamed stage, over every
value / wrong sentence.

Training warehouses are cached under ``.beamscope/bench/bank`` (the 200k one takes minutes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import CACHE, traced_once
from pipeline.beam import DecodeConfig
from pipeline.models import load_model
from pipeline.neighbours import KINDS, build_bank
from pipeline.trace import TraceConfig, trace
from pipeline.train import TrainConfig, train
from schemas import CheckpointError
from warehouse import open_warehouse, write_duckdb_file

HERE = CACHE / "bank"
TEST = "task:numbers:test:2000"
BANKS = (5_000, 40_000, 200_000)
DECODING = DecodeConfig(beam=5, max_len=40)
REPEATS = 2
WEAK_STEPS, WEAK_BANK = 300, 20_000  # the blame check's model and training sample


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
    start = time.perf_counter()
    _trace(
        Path(model), TEST, Path(wh), run, None if neighbours == "none" else neighbours, agreement=agreement
    )
    rss = _peak_rss_mb()
    print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": rss}))


def _peak_rss_mb() -> float:
    """This process' peak resident set (VmHWM): unlike ``ru_maxrss`` it does not start from the
    parent's peak, which a child keeps across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed(model: Path, wh: Path, run: str, neighbours: str, agreement: str = "all") -> dict:
    """A trace of the test corpus in a fresh process (its run removed first)."""
    _drop_run(wh, run)
    args = [str(model), str(wh), run, neighbours, agreement]  # agreement: 'all' unless said
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
    """The cached warehouse whose run 'train' traced ``size`` training sentences (traced once)."""
    wh = HERE / f"wh-{size}"
    traced_once(wh, "train", model=str(model), corpus=f"task:numbers:train:{size}", decoding=DECODING)
    return wh


def compare(wh: Path, run: str, exact: str) -> dict[str, float]:
    """Share of agreement values within 0.1 of exact search, and of equal blamed stages."""
    write_duckdb_file(wh)
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
    rows = {size: {"bank": size} for size in BANKS}
    for size, row in rows.items():
        built = [build_bank(training_warehouse(model, size), "train", kind) for kind in KINDS]
        row |= {"states": sum(b.states for b in built), "build_s": sum(b.build_seconds for b in built)}
        row["index"] = built[1].index
    base: dict = {}
    for _ in range(REPEATS):  # interleaved, best of REPEATS: drift of the machine hits all alike
        base = _best(base, timed(model, HERE / f"wh-{BANKS[0]}", "test-none", "none"))
        for size, row in rows.items():
            wh = HERE / f"wh-{size}"
            row |= _best(row, timed(model, wh, "test", "train"))
            div = timed(model, wh, "test-div", "train", "divergence")
            row |= _best(row, {f"divergence_{k}": v for k, v in div.items()})
    blame = blame_check()
    _print(base, list(rows.values()), blame)
    return {"no_bank": base, "banks": list(rows.values()), "blame_check": blame}


def _best(old: dict, new: dict) -> dict:
    """``new``'s figures, each the smaller of it and ``old``'s (seconds and RSS alike)."""
    return {k: min(v, old.get(k, v)) for k, v in new.items()}


def blame_check() -> dict:
    """Agreement and blame through the default (IVF) bank against an exact (flat) bank, with a
    model trained for 300 steps only: the 2-minute model makes no errors on the test corpus."""
    weak = HERE / "numbers-transformer-weak"
    try:
        load_model(weak, torch.device("cpu"))
    except CheckpointError:
        cfg = TrainConfig(task="numbers", arch="transformer", minutes=2.0, max_steps=WEAK_STEPS)
        train(cfg, weak, torch.device("cpu"), progress=False)
    wh = HERE / f"wh-weak-{WEAK_BANK}"
    traced_once(wh, "train", model=str(weak), corpus=f"task:numbers:train:{WEAK_BANK}", decoding=DECODING)
    index = [build_bank(wh, "train", kind).index for kind in KINDS]
    timed(weak, wh, "test", "train")
    for kind in KINDS:
        build_bank(wh, "train", kind, index="Flat")
    timed(weak, wh, "test-exact", "train")
    for kind in KINDS:
        build_bank(wh, "train", kind)  # the default bank again
    return {"bank": WEAK_BANK, "index": index[1], **compare(wh, "test", "test-exact")}


def _print(base: dict, rows: list[dict], blame: dict) -> None:
    print(f"== neighbour banks (numbers Transformer, {TEST}, beam {DECODING.beam}, best of {REPEATS}) ==")
    print(f"no bank: {base['seconds']:.1f} s, peak RSS {base['rss_mb']:.0f} MB")
    print(
        "bank (sentences)  states     index             build s  trace s  x no bank  RSS MB"
        "  | divergence (default): s, x, RSS"
    )
    for r in rows:
        print(
            f"{r['bank']:>16,}  {r['states']:>9,}  {r['index']:<16} {r['build_s']:7.1f}  "
            f"{r['seconds']:7.1f}  "
            f"{r['seconds'] / base['seconds']:8.2f}x  {r['rss_mb']:6.0f}  | {r['divergence_seconds']:6.1f} "
            f"{r['divergence_seconds'] / base['seconds']:5.2f}x  {r['divergence_rss_mb']:6.0f} MB"
        )
    big, small = rows[-1], rows[0]
    for mode, key in (("all", "seconds"), ("divergence", "divergence_seconds")):
        print(f"largest / smallest bank trace, {mode}: {big[key] / small[key]:.2f}x (target <= 1.15x)")
    print(
        f"{blame['bank']:,}-sentence bank ({blame['index']}) of a {WEAK_STEPS}-step model vs exact search: "
        f"agreement within 0.1 on {blame['agreement_equal']:.2%} of {blame['agreement_rows']:,} values; "
        f"same blamed stage for {blame['blame_equal']:.2%} of {blame['wrong_sentences']} wrong sentences"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(*sys.argv[2:])
    elif sys.argv[1:2] == ["prepare"]:  # the cached model and training warehouses only
        for size in BANKS:
            training_warehouse(numbers_model(), size)
    else:
        main()
