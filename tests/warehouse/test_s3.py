"""A warehouse in S3 (``--warehouse s3://bucket/prefix``), against a local S3-protocol server (moto in
server mode on 127.0.0.1, the ``s3`` fixture): traced into, then read back by ``sql``, ``errors``
and ``serve``; equal row for row to the same runs traced into a local directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import boto3
import pytest

from bench.dash_client import DashClient, HttpTransport
from schemas.layout import warehouse_root
from tests.dashboard.conftest import start_server
from tests.helpers import BEAMSCOPE
from tests.reliability.harness import compare_runs

REMOTE = "s3://beamscope/wh"
RUNS = (("train", "task:dates:train:60"), ("test", "task:dates:test:48"))
COMMON = ["--part-size", "30", "--beam", "2", "--topk", "4", "--max-len", "14", "--threads", "1"]
COMMON += ["--device", "cpu", "--agreement", "all"]


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEAMSCOPE, *argv], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


@pytest.fixture(scope="module")
def traced(s3, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same two runs (a training run serving a test run's neighbours) traced into S3 and into a
    local directory (returned)."""
    local = tmp_path_factory.mktemp("s3") / "local"
    for root in (REMOTE, str(local)):
        for name, corpus in RUNS:
            argv = ["trace", "--model", str(tiny_dir), "--corpus", corpus, "--run-name", name]
            proc = _cli(s3, *argv, "--warehouse", root, *COMMON)
            assert proc.returncode == 0, proc.stderr
    return local


@pytest.fixture
def s3_env(s3, monkeypatch) -> None:
    for k, v in s3.items():
        monkeypatch.setenv(k, v)


def test_an_s3_warehouse_equals_a_local_one(traced, s3_env) -> None:
    remote = warehouse_root(REMOTE)
    for run in ("train", "test"):
        counts = compare_runs(traced, remote, run)
        assert counts["sentences"] > 0 and counts["decoder_states"] > 0
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="beamscope")["Contents"]}
    assert "wh/manifest.json" in keys and "wh/banks/train/encoder.json" in keys  # the bank is in S3
    assert not any(k.startswith("wh/staging") or ".tmp-" in k or k == "wh/.lock" for k in keys)


def test_sql_and_errors_read_an_s3_warehouse_back(traced, s3) -> None:
    query = (
        "SELECT run_id, count(*) AS n, sum(exact_match::INT) AS exact FROM sentences GROUP BY 1 ORDER BY 1"
    )
    answers = []
    verbs = (["sql", query, "--format", "csv"], ["errors", "--run", "test"])
    for verb in verbs:
        here = _cli(s3, verb[0], "--warehouse", str(traced), *verb[1:])
        there = _cli(s3, verb[0], "--warehouse", REMOTE, *verb[1:])
        assert here.returncode == 0 and there.returncode == 0, there.stderr
        assert there.stdout == here.stdout  # the same answer, read from S3
        answers.append(there.stdout)
    assert answers[0].splitlines()[1:] == ["test,48,0", "train,60,0"] or "test,48," in answers[0]
    assert answers[1].startswith("run test") and "sentences 48" in answers[1]
    indexed = _cli(s3, "index", "--warehouse", REMOTE, "--run", "test", "--min-rows", "0")
    assert indexed.returncode == 0 and "BTREE" in indexed.stdout, indexed.stderr


def test_serve_reads_an_s3_warehouse(traced, s3_env) -> None:
    proc, url = start_server(REMOTE)
    try:
        host, port = url.removeprefix("http://").split(":")
        client = DashClient(HttpTransport(host, int(port)))
        client.load_dependencies()
        layout = client.page("overview", "/")
        assert layout is not None and "test" in str(layout)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("target", "env", "needle"),
    [
        ("s3://beamscope/nocreds", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "credentials"),
        ("s3://no-such-bucket/wh", {}, "no such S3 bucket 'no-such-bucket'"),
    ],
)
def test_s3_without_credentials_or_bucket_gets_one_line_and_writes_nothing(
    s3, tiny_dir, tmp_path, target, env, needle
) -> None:
    isolated = {  # no credentials from files or an instance-metadata service either
        **s3,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
    isolated = {k: v for k, v in isolated.items() if v}
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [
            BEAMSCOPE,
            "trace",
            "--model",
            str(tiny_dir),
            "--corpus",
            "task:dates:test:8",
            "--warehouse",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **isolated},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0] and target in lines[0], lines[0]
    listed = boto3.client("s3", **_client_args(s3)).list_objects_v2(Bucket="beamscope", Prefix="nocreds/")
    assert listed["KeyCount"] == 0


def _client_args(s3: dict[str, str]) -> dict[str, str]:
    return {
        "endpoint_url": s3["AWS_ENDPOINT_URL"],
        "aws_access_key_id": s3["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": s3["AWS_SECRET_ACCESS_KEY"],
        "region_name": s3["AWS_REGION"],
    }
