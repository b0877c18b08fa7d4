"""Shared fixtures: tiny models trained in seconds, and a traced warehouse built from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.attribution import Method
from pipeline.beam import DecodeConfig
from pipeline.models import load_model
from pipeline.train import TrainConfig, train
from tests.helpers import build_compare_warehouse, trace_run

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
CPU = torch.device("cpu")
TINY = dict(
    d_model=32, layers=2, heads=4, n_train=3000, n_valid=50, max_steps=150, batch_size=32, minutes=2.0
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dates Transformer (d_model 32), trained for 150 steps."""
    out = tmp_path_factory.mktemp("models") / "tiny-transformer"
    train(TrainConfig(task="dates", arch="transformer", **TINY), out, CPU, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_lstm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-lstm"
    train(TrainConfig(task="dates", arch="lstm", **TINY), out, CPU, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path):
    return load_model(tiny_dir, CPU)


@pytest.fixture(scope="session")
def tiny_lstm(tiny_lstm_dir: Path):
    return load_model(tiny_lstm_dir, CPU)


@pytest.fixture(scope="session")
def warehouse_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path, tiny_lstm_dir: Path) -> Path:
    """A warehouse with three complete runs: beam 4 per-head (transformer), greedy (with integrated
    gradients attribution, 16 steps), and LSTM."""
    root = tmp_path_factory.mktemp("wh") / "warehouse"
    runs = [  # (model, run name, decoding, part size)
        (tiny_dir, "beam4", DecodeConfig(beam=4, topk=5, max_len=16, per_head=True), 20),
        (tiny_dir, "greedy", DecodeConfig(beam=1, topk=5, max_len=16), 1024),
        (tiny_lstm_dir, "lstm", DecodeConfig(beam=3, topk=5, max_len=16), 1024),
    ]
    for model, name, decoding, part_size in runs:
        extra = {"attribution": Method("ig", 16)} if name == "greedy" else {}
        trace_run(
            model, "task:dates:test:48", root, name, decoding, batch_size=16, part_size=part_size, **extra
        )
    return root


@pytest.fixture(scope="session")
def train_warehouse_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A warehouse with a traced training sample (run 'train', 120 sentences) and a test run
    ('test', 48 sentences, beam 3) whose error blame and buckets use it."""
    root = tmp_path_factory.mktemp("wh") / "trained"
    for name, corpus in (("train", "task:dates:train:120"), ("test", "task:dates:test:48")):
        trace_run(tiny_dir, corpus, root, name, DecodeConfig(beam=3, topk=5, max_len=16), batch_size=32)
    return root


@pytest.fixture(scope="session")
def calibrated_warehouse_dir(tmp_path_factory: pytest.TempPathFactory, train_warehouse_dir: Path) -> Path:
    """A copy of ``train_warehouse_dir`` whose 'test' run is calibrated on 40 planted faults per stage
    (runs 'test.fault-STAGE-n40-seed0' and its blame_calibration table)."""
    import shutil

    from beamscope.calibrate import calibrate_run
    from pipeline.fault_runs import FaultConfig

    root = tmp_path_factory.mktemp("wh") / "calibrated"
    shutil.copytree(train_warehouse_dir, root)
    calibrate_run(FaultConfig(str(root), "test", n=40, device="cpu"), progress=False)
    return root


@pytest.fixture(scope="session")
def compare_warehouse_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """Two runs over one corpus where every outcome occurs, and two over another corpus
    (``tests.helpers.build_compare_warehouse``)."""
    return build_compare_warehouse(tiny_dir, tmp_path_factory.mktemp("wh") / "compare")


@pytest.fixture(scope="session")
def s3() -> dict[str, str]:
    """A local S3-protocol server (moto in server mode on 127.0.0.1) with a bucket 'beamscope', and
    the AWS environment variables that point at it (no S3 server package exists on this machine)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.05)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=url,
        **{k.lower(): env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        region_name="us-east-1",
    ).create_bucket(Bucket="beamscope")
    yield env
    proc.terminate()
    proc.wait(10)
