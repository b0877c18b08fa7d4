"""Shared set-up for benchmarks: a trained dates model (the demo's if cached, else trained here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.models import load_model
from pipeline.trace import TraceConfig, trace
from pipeline.train import TrainConfig, train
from schemas import CheckpointError
from schemas.layout import MANIFEST, read_manifest

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


def traced_once(root: Path, run: str, **config: object) -> str:
    """Run ``run`` of warehouse ``root``, traced with ``TraceConfig(**config)`` unless it is complete
    there already (so a cached benchmark warehouse outlives changes of the trace's options)."""
    runs = read_manifest(root, any_version=True)["runs"] if (root / MANIFEST).is_file() else {}
    if runs.get(run, {}).get("status") == "complete":
        return run
    return trace(TraceConfig(warehouse=str(root), run_name=run, **config), progress=False).run_id
