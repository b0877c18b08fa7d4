"""Running the real ``beamscope`` CLI in child processes that are SIGKILLed, and comparing warehouses.

Children are forked from a ``forkserver`` that has imported beamscope once (torch, DuckDB, LanceDB:
~3 s a process on a busy 2-core machine), so twenty kills cost seconds, not a minute. Each child is
a separate process running ``beamscope.cli.main`` from the start; it is killed either by the
crash hook (``BEAMSCOPE_CRASH_AT=point:n``, see ``schemas.layout.crash_point``) or by the parent
with SIGKILL after a delay.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import KEYS, TABLES
from schemas.layout import CRASH_ENV, TMP_MARK, connect_vectors, run_dir, vector_table

VECTOR_KEYS = {
    "encoder_states": ("sent_id", "src_pos", "layer"),
    "decoder_states": ("sent_id", "decoding", "step"),
}
_CTX: Any = None


def _context() -> Any:
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["tests.reliability.preload"])
    return _CTX


def _child(argv: list[str], crash_at: str | None, log: str, env: dict[str, str]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    if crash_at:
        os.environ[CRASH_ENV] = crash_at
    else:
        os.environ.pop(CRASH_ENV, None)
    import torch

    from beamscope.cli import main

    torch.set_num_threads(1)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_cli_child(
    argv: list[str], log: Path, crash_at: str | None = None, env: dict[str, str] | None = None
) -> Any:
    """Start ``beamscope ARGV`` in a forked child (with ``env`` added to its environment) and return
    its ``multiprocessing.Process``."""
    proc = _context().Process(target=_child, args=(argv, crash_at, str(log), env or {}))
    proc.start()
    return proc


def run_cli_child(
    argv: list[str],
    log: Path,
    crash_at: str | None = None,
    kill_after: float | None = None,
    kill_when: Callable[[], bool] | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``beamscope ARGV`` in a forked child and return its exit code (-9: SIGKILLed).

    ``crash_at`` sets the crash hook; ``kill_after`` seconds after the start (or after
    ``kill_when()`` first holds) the parent sends SIGKILL, unless the child has ended.
    """
    proc = start_cli_child(argv, log, crash_at, env)
    deadline = time.monotonic() + timeout
    if kill_when is not None:
        while proc.is_alive() and not kill_when() and time.monotonic() < deadline:
            time.sleep(0.002)
    if kill_after is not None or kill_when is not None:
        proc.join(kill_after or 0)
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(max(0.0, deadline - time.monotonic()))
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"beamscope {argv[0]} did not end in {timeout} s; see {log}")
    return proc.exitcode


def manifest(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def parts_done(root: Path, run: str) -> int:
    return len(manifest(root).get("runs", {}).get(run, {}).get("parts_done", []))


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{TMP_MARK}*") if p.is_file())


def parquet_rows(root: Path, table: str, run: str) -> pa.Table:
    """Every row of ``table`` for ``run``, sorted by every non-list, non-float16 column (times dropped)."""
    parts = sorted(run_dir(root, table, run).glob("*.parquet"))  # a local or an S3 warehouse
    if not parts:  # an optional table the run lacks
        return TABLES[table].empty_table()
    t = pa.concat_tables([pq.read_table(p.open("rb")) for p in parts])
    if table == "runs":  # when it ran and on which engine
        options = [
            json.dumps({k: v for k, v in json.loads(o).items() if k != "engine"})
            for o in t["options"].to_pylist()
        ]
        t = t.drop(["created_at", "finished_at"])
        t = t.set_column(t.schema.get_field_index("options"), "options", pa.array(options))
    keys = [f.name for f in t.schema if not pa.types.is_list(f.type) and f.type != pa.float16()]
    return t.sort_by([(c, "ascending") for c in keys])


def vector_rows(root: Path, kind: str, run: str) -> pa.Table:
    t = connect_vectors(root).open_table(vector_table(kind, run)).to_arrow()
    keys = [c for c in t.column_names if c != "vector"]
    return t.sort_by([(k, "ascending") for k in keys])


def duplicate_keys(t: pa.Table, keys: tuple[str, ...]) -> int:
    """Rows beyond the first for each key."""
    return t.num_rows - t.group_by(list(keys)).aggregate([]).num_rows


def compare_runs(clean: Path, other: Path, run: str, vectors: bool = True) -> dict[str, int]:
    """Assert ``run`` has the same rows in both warehouses and no duplicate keys; rows per table."""
    counts = {}
    for table in TABLES:
        a, b = parquet_rows(clean, table, run), parquet_rows(other, table, run)
        assert a.schema == b.schema, table
        assert a.equals(b), f"{table}: {a.num_rows} rows uninterrupted, {b.num_rows} after the kills"
        assert duplicate_keys(b, KEYS[table]) == 0, table
        counts[table] = b.num_rows
    if vectors:
        for kind, keys in VECTOR_KEYS.items():
            a, b = vector_rows(clean, kind, run), vector_rows(other, kind, run)
            assert a.equals(b), f"{kind}: {a.num_rows} rows uninterrupted, {b.num_rows} after the kills"
            assert duplicate_keys(b, keys) == 0, kind
            assert pc.all(pc.is_valid(b["vector"])).as_py()
            counts[kind] = b.num_rows
    return counts


def wait_for(predicate: Any, timeout: float = 60, every: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
