"""Where everything lives inside a warehouse directory, and how files there are replaced.

::

    <warehouse>/manifest.json                               format, schema version, runs, parts done
    <warehouse>/tables/<table>/run=<run_id>/part-NNNNN.parquet
    <warehouse>/vectors/                                    LanceDB: <kind>__<run_id> tables
    <warehouse>/staging/<run_id>/<kind>-part-NNNNN.arrow    a Ray worker's vectors, until committed
    <warehouse>/beamscope.duckdb                            views for plain `duckdb` users

Every path inside is relative to the warehouse root, so the directory can be moved or copied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.errors import SchemaVersionError, WarehouseError
from schemas.tables import MIGRATIONS, RUN_TABLES, SCHEMA_VERSION, TABLES

FORMAT = "beamscope-warehouse"
MANIFEST = "manifest.json"
DUCKDB_FILE = "beamscope.duckdb"
TMP_MARK = ".tmp-"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CRASH_ENV = "BEAMSCOPE_CRASH_AT"
CRASH_ONCE_ENV = "BEAMSCOPE_CRASH_ONCE"
CRASH_MODE_ENV = "BEAMSCOPE_CRASH_MODE"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Crash-safety tests' hook: SIGKILL this process on its ``n``-th pass through ``name`` when
    ``BEAMSCOPE_CRASH_AT=name:n`` is set. Points: model_load, batch (after each decoded batch),
    parquet / manifest / duckdb (a temporary file written, not yet renamed), lance_delete (a part's
    old vectors deleted, new ones not added), lance_add, migrate. Without the variable it does
    nothing. With ``BEAMSCOPE_CRASH_ONCE=FILE`` too, only the first process to get there is killed
    (it creates FILE first): a restarted Ray worker then goes on. ``BEAMSCOPE_CRASH_MODE=raise``
    raises a RuntimeError there instead (an error in the model's code)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec or not spec.startswith(name + ":"):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if str(_passes[name]) != spec.removeprefix(name + ":"):
        return
    once = os.environ.get(CRASH_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if os.environ.get(CRASH_MODE_ENV) == "raise":
        raise RuntimeError(f"planted failure at {spec}")
    os.kill(os.getpid(), signal.SIGKILL)


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe as a directory and table name, else raise."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise WarehouseError(f"invalid run name {run_id!r}: use letters, digits, '_', '-' and '.' (max 128)")
    return run_id


def table_glob(table: str) -> str:
    """Relative glob of every part of ``table`` across runs."""
    return f"tables/{table}/*/*.parquet"


def run_dir(root: Path, table: str, run_id: str) -> Path:
    return root / "tables" / table / f"run={run_id}"


def part_path(root: Path, table: str, run_id: str, part: int) -> Path:
    return run_dir(root, table, run_id) / f"part-{part:05d}.parquet"


def staging_dir(root: Path, run_id: str) -> Path:
    return root / "staging" / run_id


def staging_path(root: Path, run_id: str, kind: str, part: int) -> Path:
    """A part's vectors written by a Ray worker, before the driver adds them to LanceDB."""
    return staging_dir(root, run_id) / f"{kind}-part-{part:05d}.arrow"


def vectors_dir(root: Path) -> Path:
    return root / "vectors"


def vector_table(kind: str, run_id: str) -> str:
    """LanceDB table name of ``kind`` ('encoder_states' | 'decoder_states') for one run."""
    return f"{kind}__{run_id}"


def open_vectors(db: Any, name: str) -> Any:
    """The LanceDB table ``name`` of connection ``db``, or None if it does not exist."""
    try:
        return db.open_table(name)
    except ValueError:
        return None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it over ``path`` (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("manifest" if path.name == MANIFEST else path.suffix.lstrip(".") or "file")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_orphan_temps(root: Path, recursive: bool = True) -> int:
    """Delete temporary files a killed writer left behind; return how many."""
    n = 0
    for p in (root.rglob if recursive else root.glob)(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the warehouse's writer lock (an advisory lock on ``.lock``)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def new_manifest() -> dict[str, Any]:
    from beamscope import __version__

    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "beamscope_version": __version__,
        "runs": {},
    }


def read_manifest(root: Path, any_version: bool = False) -> dict[str, Any]:
    """Read and check the manifest of the warehouse at ``root`` (of this schema version, unless
    ``any_version``: then only its format is checked, for ``beamscope migrate``)."""
    path = root / MANIFEST
    if not root.is_dir():
        raise WarehouseError("no such warehouse directory", path=str(root))
    if not path.is_file():
        raise WarehouseError(
            "not a beamscope warehouse (no manifest.json); create one with `beamscope trace`",
            path=str(root),
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WarehouseError(f"unreadable manifest: {e}", path=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WarehouseError("not a beamscope warehouse manifest", path=str(path))
    if not isinstance(manifest.get("runs"), dict):
        raise WarehouseError('damaged manifest: no "runs" object', path=str(path))
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise WarehouseError("manifest has no schema_version", path=str(path))
    if any_version:
        return manifest
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"written by schema version {version}; this beamscope reads up to {SCHEMA_VERSION} "
            "- upgrade beamscope",
            path=str(path),
        )
    if version < SCHEMA_VERSION:
        if migratable(version):
            raise SchemaVersionError(
                f"written by schema version {version}, older than {SCHEMA_VERSION}; "
                f"run `beamscope migrate --warehouse {root}` to upgrade it in place",
                path=str(path),
            )
        raise SchemaVersionError(
            f"written by schema version {version}, older than {SCHEMA_VERSION}, which cannot be "
            "migrated; re-trace the runs into a new warehouse",
            path=str(path),
        )
    return manifest


def migratable(version: int) -> bool:
    """Whether a warehouse of schema ``version`` can be migrated in place (``beamscope migrate``)."""
    later = range(version + 1, SCHEMA_VERSION + 1)
    return 1 <= version <= SCHEMA_VERSION and all(v in MIGRATIONS for v in later)


def check_parts(root: Path, manifest: dict[str, Any]) -> None:
    """Raise if a complete run lacks a table directory or part file (deleted by hand, copied in half)."""
    for run_id, run in manifest["runs"].items():
        if run.get("status") != "complete":
            continue
        for table in TABLES:
            d = run_dir(root, table, run_id)
            want = 1 if table in RUN_TABLES else int(run.get("n_parts", 0))
            have = len(list(d.glob("part-*.parquet"))) if d.is_dir() else 0
            if have < want:
                raise WarehouseError(
                    f"run {run_id!r} is damaged: {have} of {want} part files of table {table} are there; "
                    "restore them from a copy, or delete the run's directories and trace it again",
                    path=str(d),
                )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically. Call it under ``locked(root)``: it first deletes the
    temporary manifests that writers killed before their rename left behind."""
    for tmp in root.glob(f".{MANIFEST}{TMP_MARK}*"):
        tmp.unlink(missing_ok=True)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
