"""A trace killed with SIGKILL and started again ends with exactly the rows of an uninterrupted one."""

import json
import os
import signal
import subprocess
import time

import lancedb

from schemas import TABLES
from schemas.layout import TMP_MARK, vector_table, vectors_dir
from tests.helpers import BEAMSCOPE
from tests.reliability.harness import parquet_rows


def _args(model, wh):
    return [
        BEAMSCOPE,
        "trace",
        "--model",
        str(model),
        "--corpus",
        "task:dates:test:120",
        "--warehouse",
        str(wh),
        "--run-name",
        "r",
        "--part-size",
        "4",
        "--batch-size",
        "4",
        "--beam",
        "3",
        "--max-len",
        "14",
        "--device",
        "cpu",
    ]


def _parts_done(wh) -> int:
    try:
        return len(json.loads((wh / "manifest.json").read_text())["runs"]["r"]["parts_done"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return 0


def _rows(wh, table):
    return parquet_rows(wh, table, "r")


def _vectors(wh, kind):
    t = lancedb.connect(str(vectors_dir(wh))).open_table(vector_table(kind, "r")).to_arrow()
    keys = [c for c in t.column_names if c != "vector"]
    return t.sort_by([(k, "ascending") for k in keys])


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_dir) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_args(tiny_dir, clean), check=True, capture_output=True, timeout=600)
    kills = 0
    for target in (3, 12, 21):
        proc = subprocess.Popen(_args(tiny_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while _parts_done(killed) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        assert _parts_done(killed) < 30, "the run finished before it could be killed"
    assert kills == 3
    subprocess.run(_args(tiny_dir, killed), check=True, capture_output=True, timeout=600)
    for table in TABLES:
        assert _rows(clean, table).equals(_rows(killed, table)), table
    for kind in ("encoder_states", "decoder_states"):
        assert _vectors(clean, kind).equals(_vectors(killed, kind)), kind
    assert not [p for p in killed.rglob(f"*{TMP_MARK}*") if p.is_file()]
