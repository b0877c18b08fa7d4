"""Attribution throughput: produced tokens attributed per second by ``beamscope attribute`` (the
whole verb: model load, reading the run's ids, captum, Parquet writes), for integrated gradients
with 32 steps and for grad x input, on the demo's two models (dates Transformer, numbers LSTM)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from beamscope.demo import DEMO_MODELS
from bench.common import CACHE, dates_model
from pipeline.attribute import AttributeConfig, attribute_run
from pipeline.attribution import Method
from pipeline.beam import DecodeConfig
from pipeline.models import load_model
from pipeline.trace import TraceConfig, trace
from pipeline.train import train
from schemas import CheckpointError

SENTENCES = 300
METHODS = (Method("ig", 32), Method("grad_x_input"))


def numbers_model(device: torch.device) -> Path:
    """The demo's numbers LSTM when present; otherwise trained here with the demo's settings."""
    spec = next(m for m in DEMO_MODELS if m.train.task == "numbers")
    for path in (Path("demo/models/numbers-lstm"), CACHE / "numbers-lstm"):
        try:
            load_model(path, device)
            return path
        except CheckpointError:
            continue
    train(spec.train, CACHE / "numbers-lstm", device, progress=False)
    return CACHE / "numbers-lstm"


def main(device_name: str = "auto") -> dict[str, float]:
    device = torch.device(
        device_name if device_name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    models = {"dates": dates_model(device), "numbers": numbers_model(device)}
    tmp = Path(tempfile.mkdtemp(prefix="beamscope-bench-attr-"))
    figures: dict[str, float] = {}
    print(f"== attribution throughput ({SENTENCES} test sentences each, beam 5, {device}) ==")
    try:
        for task, model in models.items():
            run = trace(
                TraceConfig(
                    model=str(model),
                    corpus=f"task:{task}:test:{SENTENCES}",
                    warehouse=str(tmp / "wh"),
                    run_name=task,
                    decoding=DecodeConfig(beam=5, max_len=40),
                    vectors=False,
                    neighbours_run=None,
                    device=device_name,
                ),
                progress=False,
            ).run_id
            for method in METHODS:
                cfg = AttributeConfig(str(tmp / "wh"), run, method, device=device_name)
                s = attribute_run(cfg, progress=False)
                rate = s.n_tokens / s.seconds
                figures[f"{task}_{method.name}_tokens_per_s"] = rate
                label = f"{method.name} ({method.ig_steps} steps)" if method.name == "ig" else method.name
                print(
                    f"{task:8s} {label:16s} {s.n_tokens:6d} tokens in {s.seconds:6.1f} s {rate:8.1f} tokens/s"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
