"""How often is the blame right? Faults of known stage planted in the demo's two models (the dates
Transformer and the numbers LSTM), blamed by the ordinary trace, and the thresholds calibrated on
half of them (``beamscope calibrate``): confusion matrices before and after, thresholds, held-out
precision and recall per stage against the targets (precision >= 0.8, recall >= 0.7).

The models are the demo's when ``make demo`` built them, else trained here as the demo trains
them; each gets a neighbour bank (a traced training sample) and a beam-5 test run as in the demo.
The warehouse is kept in the bench cache (a second run reuses its traces).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from beamscope.calibrate import calibrate_run
from beamscope.demo import DEMO_MODELS, DemoConfig, DemoModel
from bench.common import CACHE, traced_once
from pipeline.beam import DecodeConfig
from pipeline.fault_runs import FaultConfig
from pipeline.models import load_model, resolve_device
from pipeline.taxonomy import Taxonomy
from pipeline.train import train
from schemas import CheckpointError
from warehouse import open_warehouse
from warehouse.blame import format_calibration

FAULTS = 300  # per stage and model
N_TRAIN, N_TEST = 10_000, 2_000  # the demo's bank and test split
ROOT = CACHE / "blame"


def model_dir(spec: DemoModel, device_name: str) -> Path:
    """The demo's checkpoint when it was trained as the demo trains it, else one trained here."""
    train_cfg = dataclasses.replace(spec.train, minutes=DemoConfig(Path("demo")).minutes)
    for path in (Path("demo/models") / spec.name, ROOT / "models" / spec.name):
        try:
            if load_model(path, torch.device("cpu")).meta.get("train") == dataclasses.asdict(train_cfg):
                return path
        except CheckpointError:
            continue
    path = ROOT / "models" / spec.name
    train(train_cfg, path, resolve_device(device_name))
    return path


def main(device_name: str = "auto") -> None:
    print(f"== blame benchmark (planted faults, {FAULTS} per stage and model) ==")
    for spec in DEMO_MODELS:
        path = model_dir(spec, device_name)
        task, wh = spec.train.task, ROOT / "warehouse"
        # the default thresholds (not an earlier calibration's): the benchmark measures them
        common = dict(model=str(path), device=device_name, taxonomy=Taxonomy())
        common["decoding"] = DecodeConfig(beam=5, max_len=spec.max_len)
        traced_once(wh, f"{spec.name}.train", corpus=f"task:{task}:train:{N_TRAIN}", **common)
        test = traced_once(wh, f"{spec.name}.test", corpus=f"task:{task}:test:{N_TEST}", **common)
        start = time.perf_counter()
        s = calibrate_run(FaultConfig(str(wh), test, n=FAULTS, device=device_name), progress=False)
        with open_warehouse(wh) as w:
            print(f"\n-- {spec.name} --")
            print(format_calibration(w, test))
        n = len(s.calibration.faults.planted)
        print(
            f"re-applied rule = recorded blame for {s.reproduced} of {n}; {time.perf_counter() - start:.0f}s"
        )
