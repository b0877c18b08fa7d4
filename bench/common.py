"""Shared set-up for benchmarks: a trained dates model (the demo's if cached, else trained here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.models import load_model
from pipeline.train import TrainConfig, train
from schemas import CheckpointError

CACHE = Path(".beamscope/bench")


def dates_model(device: torch.device) -> Path:
    """The demo's model when present; otherwise one trained for 2 minutes into the bench cache."""
    for path in (Path("demo/models/dates-transformer"), CACHE / "dates-transformer"):
        try:
            load_model(path, device)
            return path
        except CheckpointError:
            continue
    path = CACHE / "dates-transformer"
    train(TrainConfig(task="dates", arch="transformer", minutes=2.0), path, device)
    return path


def best_of(n: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``n`` calls (seconds)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
