"""``trace --engine ray`` on a real local Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs, a
small object store), started here and stopped after: row-equal to the local engine, a worker
SIGKILLed mid-part, the driver SIGKILLed mid-run, an error in the model's code, bad options."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.layout import CRASH_ENV, CRASH_MODE_ENV, CRASH_ONCE_ENV, warehouse_root
from tests.helpers import BEAMSCOPE, assert_one_line_error, run_cli, trace_run
from tests.reliability.harness import compare_runs, parts_done, run_cli_child

RAY = str(Path(sys.executable).parent / "ray")
RAY_ENV: dict[str, str] = {}  # what a driver needs to join the cluster
CORPUS = "task:dates:test:96"
RUN = "test"
# 4 parts of 24 sentences; the decoding every run here shares
COMMON = ["--corpus", CORPUS, "--run-name", RUN, "--part-size", "24", "--batch-size", "12"]
COMMON += ["--beam", "2", "--topk", "4", "--max-len", "14", "--threads", "1", "--device", "cpu"]
COMMON += ["--agreement", "all"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3: dict[str, str]) -> str:
    """The address of a Ray head started for this module (stopped after it), with token
    authentication (Ray's default for ``ray start``): its token travels in ``RAY_ENV``. Its
    workers have credentials for the local S3 server (``s3``), as a cluster's nodes would."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    RAY_ENV.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMSCOPE_")} | RAY_ENV | s3
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2"]
    start += ["--object-store-memory=100000000", "--include-dashboard=false", "--disable-usage-stats"]
    start += [f"--temp-dir={temp}"]
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=120)
    yield f"127.0.0.1:{port}"
    _stop_cluster(temp)
    RAY_ENV.clear()


def _stop_cluster(temp: Path) -> None:
    """Stop this module's cluster only (``ray stop`` would stop every Ray on the machine): the
    processes whose command line names its temp directory, and their descendants."""
    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if proc.name.isdigit():
            parents[int(proc.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), str(temp) in cmdline)
    ours = {pid for pid, (_, named) in parents.items() if named}
    while grown := {pid for pid, (ppid, _) in parents.items() if ppid in ours} - ours:
        ours |= grown
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while any(_alive(pid) for pid in ours) and time.monotonic() < deadline:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A warehouse with a training run (its banks serve the test run's neighbour agreement)."""
    from pipeline.beam import DecodeConfig

    root = tmp_path_factory.mktemp("raywh") / "base"
    trace_run(tiny_dir, "task:dates:train:120", root, "train", DecodeConfig(beam=2, topk=4, max_len=14))
    return root


@pytest.fixture(scope="module")
def local(base: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test run traced by the local engine."""
    root = tmp_path_factory.mktemp("raywh") / "local"
    shutil.copytree(base, root)
    proc = run_cli("trace", "--model", str(tiny_dir), "--warehouse", str(root), *COMMON)
    assert proc.returncode == 0, proc.stderr
    return root


def _copy(base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    return root


def _ray_argv(model: Path, root: Path, address: str, workers: int = 2) -> list[str]:
    return ["trace", "--model", str(model), "--warehouse", str(root), *COMMON, "--engine", "ray"] + [
        "--address",
        address,
        "--workers",
        str(workers),
    ]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEAMSCOPE, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **RAY_ENV, **(env or {})},
    )


def test_a_worker_killed_mid_part_is_retried_and_the_run_is_row_equal(
    cluster, base, local, tiny_dir, tmp_path
) -> None:
    root = _copy(base, tmp_path)
    marker = tmp_path / "killed-once"
    env = {CRASH_ENV: "batch:1", CRASH_ONCE_ENV: str(marker)}  # a worker's first decoded batch
    proc = _run(_ray_argv(tiny_dir, root, cluster, workers=1), env)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()  # a worker was SIGKILLed
    compare_runs(local, root, RUN)


def test_the_driver_killed_mid_run_resumes_by_part_and_is_row_equal(
    cluster, base, local, tiny_dir, tmp_path
) -> None:
    root = _copy(base, tmp_path)
    argv = _ray_argv(tiny_dir, root, cluster, workers=1)
    log = tmp_path / "driver.log"
    code = run_cli_child(argv, log, kill_when=lambda: parts_done(root, RUN) >= 1, env=RAY_ENV)
    assert code == -9, log.read_text()
    assert 1 <= parts_done(root, RUN) < 4
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr
    compare_runs(local, root, RUN)


def test_a_ray_run_into_s3_equals_the_local_run(cluster, s3, base, local, tiny_dir, monkeypatch) -> None:
    """2 workers writing a warehouse in S3 (the fault tests below write a shared directory)."""
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    remote = warehouse_root("s3://beamscope/ray")
    remote.fs.put(f"{base}/", remote.path, recursive=True)  # the training run and its banks
    proc = _run(_ray_argv(tiny_dir, remote, cluster), s3)
    assert proc.returncode == 0, proc.stderr
    counts = compare_runs(local, remote, RUN)
    assert counts["sentences"] == 96 and counts["decoder_states"] > 0
    assert not remote.fs.exists(f"{remote.path}/staging")


def test_an_error_in_the_model_code_fails_the_run_with_one_line(cluster, base, tiny_dir, tmp_path) -> None:
    root = _copy(base, tmp_path)
    env = {CRASH_ENV: "batch:1", CRASH_MODE_ENV: "raise"}
    proc = _run(_ray_argv(tiny_dir, root, cluster, workers=1), env)
    # the progress bar's carriage-return frames, cleared on the failure, are not lines
    lines = [s for s in re.split(r"[\r\n]", proc.stderr) if s.strip() and not s.startswith("trace test")]
    assert len(lines) == 1, proc.stderr
    assert re.fullmatch(
        r"beamscope: error: part \d failed in a Ray worker: RuntimeError: planted failure at batch:1",
        lines[0],
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert parts_done(root, RUN) == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--address", "127.0.0.1:1"], "no Ray cluster answers there"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--gpus-per-worker", "1"], "GPUs; the Ray cluster has 0"),
        (["--workers", "3"], "CPUs; the Ray cluster has 2"),
    ],
)
def test_bad_engine_options_get_one_line_and_write_nothing(
    cluster, tiny_dir, tmp_path, extra, needle, monkeypatch, capsys
) -> None:
    from beamscope.cli import main

    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "new"
    argv = ["trace", "--model", str(tiny_dir), "--warehouse", str(root), *COMMON, "--engine", "ray"]
    assert main([*argv, "--address", cluster, *extra]) == 2  # in this process: no start-up to wait for
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not root.exists()


def test_ray_options_need_the_ray_engine(tiny_dir, tmp_path) -> None:
    proc = run_cli(
        "trace", "--model", str(tiny_dir), "--warehouse", str(tmp_path / "w"), *COMMON, "--workers", "2"
    )
    assert_one_line_error(proc, "--workers need --engine ray")
