"""Where everything lives inside a warehouse directory, and how files there are replaced.

::

    <warehouse>/manifest.json                               format, schema version, runs, parts done
    <warehouse>/tables/<table>/run=<run_id>/part-NNNNN.parquet
    <warehouse>/vectors/                                    LanceDB: <kind>__<run_id> tables
    <warehouse>/staging/<run_id>/<kind>-part-NNNNN.arrow    a Ray worker's vectors, until committed
    <warehouse>/banks/<run_id>/<kind>.json (+ .faiss, .parquet)  neighbour banks of a training run
    <warehouse>/beamscope.duckdb                            views for plain `duckdb` users

Every path inside is relative to the warehouse root, so the directory can be moved or copied.
The root is a local directory or an S3 prefix (``warehouse_root``); the files in it are written
by ``pipeline.writer`` only.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from schemas.errors import SchemaVersionError, WarehouseError
from schemas.migrations import MIGRATIONS
from schemas.tables import OPTIONAL_TABLES, RUN_TABLES, SCHEMA_VERSION, TABLES
from schemas.version import beamscope_version

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


def warehouse_root(spec: str | os.PathLike[str]) -> Path:
    """The warehouse at ``spec``: a local directory, or ``s3://bucket/prefix`` as a ``UPath`` over
    s3fs (the ``Path`` methods beamscope uses work on it; endpoint and credentials come from the
    usual AWS environment variables, e.g. ``AWS_ENDPOINT_URL``). The bucket is asked once, so a
    missing bucket, missing credentials or an unreachable endpoint fail here, in one line."""
    if is_remote(spec):
        return spec  # type: ignore[return-value]
    text = os.fspath(spec)
    if not text.startswith("s3://"):
        return Path(text)
    from upath import UPath

    root = UPath(
        text.rstrip("/"),
        use_listings_cache=False,  # other writers' files show at once
        skip_instance_cache=True,
        config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
    )
    bucket = root.path.split("/")[0]
    try:
        root.fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise WarehouseError(f"no such S3 bucket {bucket!r}", path=text) from None
    except Exception as e:  # botocore's credential and endpoint errors are not OSErrors
        raise WarehouseError(f"cannot reach S3: {type(e).__name__}: {_first_line(e)}", path=text) from None
    return root


def is_remote(path: object) -> bool:
    """Whether ``path`` lives in object storage (a ``UPath`` of a protocol other than file)."""
    return getattr(path, "protocol", "") not in ("", "file", "local")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def file_stamp(path: Path) -> tuple:
    """What changes whenever ``path`` is replaced (its inode and time locally, its ETag on S3)."""
    if is_remote(path):
        return (path.fs.info(path.path)["ETag"],)
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def connect_vectors(root: Path) -> Any:
    """The LanceDB connection of the warehouse's vectors (on S3 through Lance's own S3 support)."""
    import lancedb

    if not is_remote(root):
        return lancedb.connect(str(vectors_dir(root)))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    options = {"allow_http": "true"} if endpoint.startswith("http://") else None
    return lancedb.connect(str(vectors_dir(root)), storage_options=options)


def banks_dir(root: Path, run_id: str) -> Path:
    """Where the neighbour banks of training run ``run_id`` live."""
    return root / "banks" / run_id


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


def new_manifest() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "beamscope_version": beamscope_version(),
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
        for table in (t for t in TABLES if t not in OPTIONAL_TABLES):
            d = run_dir(root, table, run_id)
            want = 1 if table in RUN_TABLES else int(run.get("n_parts", 0))
            have = len(list(d.glob("part-*.parquet"))) if d.is_dir() else 0
            if have < want:
                raise WarehouseError(
                    f"run {run_id!r} is damaged: {have} of {want} part files of table {table} are there; "
                    "restore them from a copy, or delete the run's directories and trace it again",
                    path=str(d),
                )
