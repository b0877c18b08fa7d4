"""Where everything lives inside a warehouse directory, and how files there are replaced.

::

    <warehouse>/manifest.json                               format, schema version, runs, parts done
    <warehouse>/tables/<table>/run=<run_id>/part-NNNNN.parquet
    <warehouse>/vectors/                                    LanceDB: <kind>__<run_id> tables
    <warehouse>/beamscope.duckdb                            views for plain `duckdb` users

Every path inside is relative to the warehouse root, so the directory can be moved or copied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.errors import SchemaVersionError, WarehouseError
from schemas.tables import SCHEMA_VERSION

FORMAT = "beamscope-warehouse"
MANIFEST = "manifest.json"
DUCKDB_FILE = "beamscope.duckdb"
TMP_MARK = ".tmp-"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_orphan_temps(root: Path) -> int:
    """Delete temporary files a killed writer left behind; return how many."""
    n = 0
    for p in root.rglob(f".*{TMP_MARK}*"):
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


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check the manifest of the warehouse at ``root``."""
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
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise WarehouseError("manifest has no schema_version", path=str(path))
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"written by schema version {version}; this beamscope reads up to {SCHEMA_VERSION} "
            "- upgrade beamscope",
            path=str(path),
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"written by schema version {version}, older than {SCHEMA_VERSION}; "
            "re-trace the runs into a new warehouse",
            path=str(path),
        )
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
