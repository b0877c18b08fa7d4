"""The one place that writes a warehouse: Parquet parts, LanceDB vectors and their scalar
indexes, neighbour banks, the manifest and ``beamscope.duckdb``. Both trace engines, what-if,
``index`` and ``migrate`` write through here; readers (``warehouse/``) never write.

A warehouse is a local directory or an S3 prefix (``schemas.layout.warehouse_root``). Every file
is replaced atomically: locally a temporary sibling is renamed over it; on S3 a file written
locally is sent in one PUT (an object is whole or absent). Whoever rewrites the manifest holds
the writer lock: an advisory ``flock`` locally, a create-only ``.lock`` object on S3.

Idempotent by construction, so a killed trace resumes to exactly the rows of an
uninterrupted one: a part file is complete or absent and rewriting it gives the same file; the
vectors of a part are deleted by ``sent_id`` range before they are added (a Lance commit is
atomic); a part counts as done only once the manifest, replaced under the writer lock, says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import faiss
import pyarrow as pa
import pyarrow.parquet as pq
from lancedb.index import Bitmap, BTree
from tqdm import tqdm

from schemas import SCHEMA_VERSION, TABLES, VECTOR_TABLES, WarehouseError
from schemas.layout import (
    DUCKDB_FILE,
    MANIFEST,
    TMP_MARK,
    banks_dir,
    check_run_id,
    connect_vectors,
    crash_point,
    is_remote,
    new_manifest,
    open_vectors,
    part_path,
    read_manifest,
    run_dir,
    staging_dir,
    staging_path,
    vector_table,
)
from schemas.version import beamscope_version

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


class RunWriter:
    """Writes the parts of one run; ``begin`` registers (or resumes) it in the manifest."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root, self.run_id = root, check_run_id(run_id)
        self._db: Any = None
        self.created_at = dt.datetime.now(dt.timezone.utc)

    def begin(
        self, fingerprint: str, n_parts: int, run_row: dict[str, Any], vocabulary: pa.Table
    ) -> set[int]:
        """Register the run (its ``runs`` row and ``vocabulary``) and return the parts already
        done (empty for a new run)."""
        with locked(self.root):
            if (self.root / "manifest.json").exists():
                manifest = read_manifest(self.root)
            elif self.root.exists() and {p.name for p in self.root.iterdir()} - {".lock"}:
                raise WarehouseError(
                    "directory exists, is not empty and is not a beamscope warehouse", path=str(self.root)
                )
            else:
                manifest = new_manifest()
            run = manifest["runs"].get(self.run_id)
            if run is not None and run["fingerprint"] != fingerprint:
                raise WarehouseError(
                    f"run {self.run_id!r} exists with other settings; choose another --run-name "
                    "or delete the run",
                    path=str(self.root),
                )
            if run is not None:
                self.created_at = dt.datetime.fromisoformat(run["created_at"])
            if run is not None and run["status"] == "complete":
                return set(range(n_parts))
            if run is None:
                run = {
                    "fingerprint": fingerprint,
                    "status": "running",
                    "n_parts": n_parts,
                    "parts_done": [],
                    "created_at": self.created_at.isoformat(),
                    "split": run_row["split"],
                    "model_hash": run_row["model_hash"],
                    "vectors": json.loads(run_row["options"]).get("vectors", True),
                }
                manifest["runs"][self.run_id] = run
                write_manifest(self.root, manifest)
            for d in [run_dir(self.root, t, self.run_id) for t in TABLES] + [
                staging_dir(self.root, self.run_id)
            ]:
                if d.exists():
                    remove_orphan_temps(d)
            if not part_path(self.root, "runs", self.run_id, 0).exists():
                self._write_run_row({**run_row, "status": "running"})
            if not part_path(self.root, "vocabulary", self.run_id, 0).exists():
                write_parquet(vocabulary, part_path(self.root, "vocabulary", self.run_id, 0))
            return set(run["parts_done"])

    def _write_run_row(self, row: dict[str, Any]) -> None:
        row = {**row, "run_id": self.run_id, "created_at": self.created_at}
        table = pa.Table.from_pylist([row], schema=TABLES["runs"])
        write_parquet(table, part_path(self.root, "runs", self.run_id, 0))

    def write_part(
        self,
        part: int,
        tables: dict[str, pa.Table],
        vectors: dict[str, pa.Table],
        sent_range: tuple[int, int],
    ) -> None:
        """Write every table's part, replace the part's vectors, then mark the part done."""
        self.write_tables(part, tables)
        self.write_vectors(vectors, sent_range)
        self.mark_done(part)

    def write_tables(self, part: int, tables: dict[str, pa.Table]) -> None:
        """Each table's part file, under its final name (rewriting it gives the same file)."""
        for name, table in tables.items():
            write_parquet(table, part_path(self.root, name, self.run_id, part))

    def write_vectors(self, vectors: dict[str, pa.Table], sent_range: tuple[int, int]) -> None:
        """Replace the vectors of the sentences in ``sent_range`` (delete, then add)."""
        lo, hi = sent_range
        for kind, table in vectors.items():
            tbl = open_vectors(self._vectors(), vector_table(kind, self.run_id))
            if tbl is not None:
                tbl.delete(f"sent_id >= {lo} AND sent_id < {hi}")
                crash_point("lance_delete")
                if table.num_rows:
                    tbl.add(table)
            elif table.num_rows:
                self._vectors().create_table(vector_table(kind, self.run_id), data=table, schema=table.schema)
            crash_point("lance_add")

    def stage_vectors(self, part: int, vectors: dict[str, pa.Table]) -> None:
        """Keep a part's vectors in staging files (Arrow IPC) for ``commit_staged`` (Ray workers:
        one process, the driver, writes the LanceDB tables)."""
        for kind, table in vectors.items():
            path = staging_path(self.root, self.run_id, kind, part)
            with (
                atomic_path(path) as tmp,
                pa.OSFile(str(tmp), "wb") as sink,
                pa.ipc.new_file(sink, table.schema) as out,
            ):
                out.write_table(table)

    def commit_staged(self, part: int, sent_range: tuple[int, int]) -> None:
        """Move a part's staged vectors into LanceDB and mark the part done."""
        paths = {kind: staging_path(self.root, self.run_id, kind, part) for kind in VECTOR_TABLES}
        staged = {
            k: pa.ipc.open_file(pa.py_buffer(p.read_bytes())).read_all()
            for k, p in paths.items()
            if p.exists()
        }
        self.write_vectors(staged, sent_range)
        self.mark_done(part)
        for p in paths.values():
            p.unlink(missing_ok=True)

    def mark_done(self, part: int) -> None:
        """Record ``part`` as done in the manifest (under the writer lock)."""
        with locked(self.root):
            manifest = read_manifest(self.root)
            done = set(manifest["runs"][self.run_id]["parts_done"])
            manifest["runs"][self.run_id]["parts_done"] = sorted(done | {part})
            write_manifest(self.root, manifest)

    def is_complete(self) -> bool:
        return read_manifest(self.root)["runs"][self.run_id]["status"] == "complete"

    def count_rows(self, table: str) -> int:
        """Rows of ``table`` written for this run so far."""
        return sum(pq.read_metadata(f).num_rows for f in self._parts(table))

    def read(self, table: str, columns: list[str]) -> list[list[Any]]:
        """Columns of ``table`` written for this run, as Python lists."""
        t = self.read_table(table, columns)
        return [t[c].to_pylist() for c in columns]

    def read_table(self, table: str, columns: list[str]) -> pa.Table:
        """Columns of ``table`` written for this run (its parts in order)."""
        parts = [pq.read_table(f, columns=columns) for f in self._parts(table)]
        return pa.concat_tables(parts) if parts else TABLES[table].select(columns).empty_table()

    def read_vectors(self, kind: str, where: str, columns: list[str]) -> pa.Table | None:
        """Rows of this run's vector table ``kind`` matching ``where`` (None: the run has none)."""
        tbl = open_vectors(self._vectors(), vector_table(kind, self.run_id))
        if tbl is None:
            return None
        return tbl.search().where(where).limit(None).select(columns).to_arrow()

    def write_run_tables(self, tables: dict[str, pa.Table]) -> None:
        """The one part of each run table derived when a run completes (``pipeline.clusters``)."""
        for name, table in tables.items():
            write_parquet(table, part_path(self.root, name, self.run_id, 0))

    def part_numbers(self, table: str) -> list[int]:
        """The part numbers of ``table`` written for this run."""
        d = run_dir(self.root, table, self.run_id)
        return (
            sorted(int(p.stem.removeprefix("part-")) for p in d.glob("part-*.parquet")) if d.exists() else []
        )

    def read_part(self, table: str, part: int, columns: list[str]) -> pa.Table:
        """Columns of one part of ``table`` of this run."""
        with part_path(self.root, table, self.run_id, part).open("rb") as f:
            return pq.read_table(f, columns=columns)

    def begin_derived(
        self, name: str, tables: tuple[str, ...], fingerprint: str, info: dict[str, Any]
    ) -> set[int]:
        """Start (or resume) writing the optional ``tables`` of this complete run, recorded in its
        manifest entry under ``name``. Returns the parts done under the same ``fingerprint``; with
        another fingerprint the tables' old parts are deleted first (under the writer lock)."""
        with locked(self.root):
            manifest = read_manifest(self.root)
            run = manifest["runs"].get(self.run_id)
            if run is None or run["status"] != "complete":
                raise WarehouseError(f"run {self.run_id!r} is not a complete run", path=str(self.root))
            entry = run.get(name)
            if entry is not None and entry["fingerprint"] == fingerprint:
                return set(entry["parts_done"])
            for table in tables:
                self._remove_parts(table)
            run[name] = {**info, "fingerprint": fingerprint, "parts_done": [], "status": "running"}
            write_manifest(self.root, manifest)
            return set()

    def derived_done(self, name: str, part: int | None = None, complete: bool = False) -> None:
        """Record ``part`` of the derived tables ``name`` as written, and/or all of them complete."""
        with locked(self.root):
            manifest = read_manifest(self.root)
            entry = manifest["runs"][self.run_id][name]
            if part is not None:
                entry["parts_done"] = sorted({*entry["parts_done"], part})
            if complete:
                entry["status"] = "complete"
            write_manifest(self.root, manifest)

    def _remove_parts(self, table: str) -> None:
        d = run_dir(self.root, table, self.run_id)
        if is_remote(d):
            with contextlib.suppress(FileNotFoundError):
                d.fs.rm(d.path, recursive=True)
        else:
            shutil.rmtree(d, ignore_errors=True)

    def _parts(self, table: str) -> Iterator[Any]:
        """The open part files of ``table`` written for this run so far."""
        d = run_dir(self.root, table, self.run_id)
        for p in sorted(d.glob("*.parquet")) if d.exists() else ():
            with p.open("rb") as f:
                yield f

    def _vectors(self) -> Any:
        if self._db is None:
            self._db = connect_vectors(self.root)
        return self._db

    def finish(self, run_row: dict[str, Any], stats: dict[str, Any]) -> None:
        """Publish the run: its ``runs`` row says 'complete' (readers see it from now on)."""
        now = dt.datetime.now(dt.timezone.utc)
        self._write_run_row({**run_row, "status": "complete", "finished_at": now})
        with locked(self.root):
            manifest = read_manifest(self.root)
            manifest["runs"][self.run_id].update(status="complete", **stats)
            write_manifest(self.root, manifest)
        staging = staging_dir(self.root, self.run_id)
        if is_remote(staging):
            with contextlib.suppress(FileNotFoundError):
                staging.fs.rm(staging.path, recursive=True)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # the staging directory itself, once no run uses it
                staging.parent.rmdir()


def run_row(**fields: Any) -> dict[str, Any]:
    """A ``runs`` row with the version columns filled in."""
    return {
        **fields,
        "created_at": dt.datetime.now(dt.timezone.utc),
        "finished_at": None,
        "schema_version": SCHEMA_VERSION,
        "beamscope_version": beamscope_version(),
        "decoding": json.dumps(fields["decoding"], sort_keys=True),
        "options": json.dumps(fields["options"], sort_keys=True),
    }


def save_bank(root: Path, run_id: str, kind: str, index: faiss.Index, rows: pa.Table, meta: dict) -> tuple:
    """Write a neighbour bank's index and row files under fresh names, then ``<kind>.json`` (``meta``
    with the file names: the commit; a reader sees the old bank or the new one, whole); the old
    files are then removed. Returns the new files' names."""
    d = banks_dir(root, run_id)
    build = secrets.token_hex(4)
    files = (f"{kind}-{build}.faiss", f"{kind}-{build}.parquet")
    with atomic_path(d / files[0]) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(d / files[1]) as tmp:
        pq.write_table(rows, tmp, compression="zstd")
    with locked(root):
        atomic_write_text(d / f"{kind}.json", json.dumps({**meta, "files": list(files)}, indent=1))
        for old in d.glob(f"{kind}-*"):
            if old.name not in files:  # a reader that mapped them keeps its mapping
                old.unlink(missing_ok=True)
    return files


DEFAULT_MIN_ROWS = 100_000  # below this, a scan is fast enough and no index is built
# Scalar indexes of the columns the dashboard filters and looks up by (those a table has).
SCALAR_INDEXES = {"sent_id": "BTREE", "decoding": "BITMAP", "layer": "BITMAP"}


@dataclass(frozen=True)
class IndexReport:
    table: str
    rows: int
    built: bool
    seconds: float
    params: dict[str, int | str]


def build_indexes(
    root: Path, runs: list[str], min_rows: int = DEFAULT_MIN_ROWS, progress: bool = True
) -> list[IndexReport]:
    """Build (or rebuild) the scalar indexes (``SCALAR_INDEXES``) of every vector table of ``runs``
    with at least ``min_rows`` rows, and record them in the manifest. Without a BTREE on
    ``sent_id`` a key look-up scans the column (~85 ms at 2.64M rows, ~4 ms with it)."""
    db = connect_vectors(root)
    names = [vector_table(kind, run) for run in runs for kind in VECTOR_TABLES]
    reports = []
    for name in tqdm(names, desc="index", unit="table", disable=not progress):
        tbl = open_vectors(db, name)
        if tbl is None:
            continue
        rows = tbl.count_rows()
        if rows < min_rows:
            reports.append(IndexReport(name, rows, False, 0.0, {"scalar_indexes": "none (scans)"}))
            continue
        start = time.perf_counter()
        scalar = {c: kind for c, kind in SCALAR_INDEXES.items() if c in tbl.schema.names}
        for column, kind in scalar.items():
            tbl.create_index(column, config=BTree() if kind == "BTREE" else Bitmap(), replace=True)
        params = {"scalar_indexes": ", ".join(f"{c} {kind}" for c, kind in scalar.items())}
        reports.append(IndexReport(name, rows, True, time.perf_counter() - start, params))
    with locked(root):
        manifest = read_manifest(root)
        indexes = manifest.setdefault("indexes", {})
        for r in reports:
            indexes[r.table] = {"rows": r.rows, "built": r.built, **r.params}
        write_manifest(root, manifest)
    return reports


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
