"""Atomic files, the writer lock, the manifest, Parquet parts and ``beamscope.duckdb``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.layout import (
    DUCKDB_FILE,
    MANIFEST,
    TMP_MARK,
    crash_point,
    is_remote,
)

LOCK_STALE_S = 120.0  # an S3 writer lock older than this was left by a killed writer (held: ms)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file for ``path``; on success it replaces ``path`` atomically."""
    remote = is_remote(path)
    if not remote:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=None if remote else path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("manifest" if path.name == MANIFEST else path.suffix.lstrip(".") or "file")
        if remote:
            path.fs.put_file(str(tmp_path), path.path)  # one PUT: the old object or the new one
        else:
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_orphan_temps(root: Path, recursive: bool = True) -> int:
    """Delete temporary files a killed writer left behind; return how many (none on S3)."""
    if is_remote(root):
        return 0
    n = 0
    for p in (root.rglob if recursive else root.glob)(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the warehouse's writer lock (an advisory lock on ``.lock``; on S3 a create-only object)."""
    if is_remote(root):
        with _remote_lock(root / ".lock"):
            yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _remote_lock(lock: Any) -> Iterator[None]:
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}).encode()
    while True:
        try:
            with lock.fs.open(lock.path, "xb") as f:  # If-None-Match: * (fails if it exists)
                f.write(owner)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if _stale(lock):
                    lock.fs.rm(lock.path)
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.fs.rm(lock.path)


def _stale(lock: Any) -> bool:
    """Whether an S3 writer lock was left by a killed writer (or is no lock of ours: a local
    warehouse's flock file copied along)."""
    try:
        owner = json.loads(lock.fs.cat_file(lock.path))
        taken = float(owner["at"])
    except (ValueError, KeyError, TypeError):
        return True
    return time.time() - taken > LOCK_STALE_S


def remove_tree(d: Path) -> None:
    """Delete a directory (an S3 prefix) and everything under it; nothing if it is absent."""
    if is_remote(d):
        with contextlib.suppress(FileNotFoundError):
            d.fs.rm(d.path, recursive=True)
    else:
        shutil.rmtree(d, ignore_errors=True)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically. Call it under ``locked(root)``: it first deletes the
    temporary manifests that writers killed before their rename left behind."""
    if not is_remote(root):
        for tmp in root.glob(f".{MANIFEST}{TMP_MARK}*"):
            tmp.unlink(missing_ok=True)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def write_parquet(table: pa.Table, path: Path) -> None:
    """zstd Parquet, written to a temporary name and renamed into place.

    Float columns use the byte-stream-split encoding (about 30 % smaller with zstd than plain).
    """
    # float16 (Parquet FLOAT16) is left out: DuckDB reads byte-stream-split only for 32/64-bit types
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type) and f.type != pa.float16()]
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=256 * 1024,
            use_byte_stream_split=floats or False,
            use_dictionary=[f.name for f in table.schema if f.name not in floats and not _is_f16(f.type)],
        )


def _is_f16(t: pa.DataType) -> bool:
    return t == pa.float16() or (pa.types.is_list(t) and t.value_type == pa.float16())


def write_duckdb_file(root: Path, statements: list[str]) -> Path | None:
    """(Re)write ``beamscope.duckdb`` with ``statements`` (views whose paths are relative to the
    warehouse, so open it from inside the directory: ``cd WAREHOUSE && duckdb beamscope.duckdb``).
    Replaced atomically. None for an S3 warehouse: plain ``duckdb`` could not read it without httpfs."""
    if is_remote(root):
        return None
    target = root / DUCKDB_FILE
    with locked(root):  # one writer at a time, so the temporary files of killed ones can go
        for orphan in root.glob(f".{DUCKDB_FILE}{TMP_MARK}*"):
            orphan.unlink(missing_ok=True)
        with atomic_path(target) as tmp:
            tmp.unlink()
            con = duckdb.connect(str(tmp))
            try:
                con.execute(f"SET file_search_path = '{str(root.resolve()).replace(chr(39), chr(39) * 2)}'")
                for stmt in statements:
                    con.execute(stmt)
                con.execute("RESET file_search_path")
            finally:
                con.close()
            with contextlib.suppress(FileNotFoundError):
                Path(str(tmp) + ".wal").unlink()
            tmp.touch(exist_ok=True)
    return target
