"""Writing a run into a warehouse: Parquet parts, LanceDB vectors, the manifest.

Idempotent by construction, so a killed trace resumes to exactly the rows of an
uninterrupted one: a Parquet part is written under a temporary name and renamed (a part
file is complete or absent); the vectors of a part are deleted by ``sent_id`` range before
they are added (a Lance commit is atomic); a part counts as done only once the manifest,
itself replaced atomically under the writer lock, says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.parquet as pq

from beamscope import __version__
from schemas import SCHEMA_VERSION, TABLES, VECTOR_TABLES, WarehouseError
from schemas.layout import (
    atomic_path,
    check_run_id,
    crash_point,
    locked,
    new_manifest,
    open_vectors,
    part_path,
    read_manifest,
    remove_orphan_temps,
    run_dir,
    staging_dir,
    staging_path,
    vector_table,
    vectors_dir,
    write_manifest,
)


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
        self.root, self.run_id = Path(root), check_run_id(run_id)
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
            elif any(self.root.iterdir()) and set(p.name for p in self.root.iterdir()) != {".lock"}:
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
            k: pa.ipc.open_file(pa.memory_map(str(p))).read_all() for k, p in paths.items() if p.exists()
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
        d = run_dir(self.root, table, self.run_id)
        return sum(pq.ParquetFile(p).metadata.num_rows for p in d.glob("*.parquet")) if d.exists() else 0

    def read(self, table: str, columns: list[str]) -> list[list[Any]]:
        """Columns of ``table`` written for this run, as Python lists."""
        t = pq.read_table(run_dir(self.root, table, self.run_id), columns=columns)
        return [t[c].to_pylist() for c in columns]

    def _vectors(self) -> Any:
        if self._db is None:
            self._db = lancedb.connect(str(vectors_dir(self.root)))
        return self._db

    def finish(self, run_row: dict[str, Any], stats: dict[str, Any]) -> None:
        """Publish the run: its ``runs`` row says 'complete' (readers see it from now on)."""
        now = dt.datetime.now(dt.timezone.utc)
        self._write_run_row({**run_row, "status": "complete", "finished_at": now})
        with locked(self.root):
            manifest = read_manifest(self.root)
            manifest["runs"][self.run_id].update(status="complete", **stats)
            write_manifest(self.root, manifest)
        shutil.rmtree(staging_dir(self.root, self.run_id), ignore_errors=True)
        with contextlib.suppress(OSError):  # the staging directory itself, once no run uses it
            staging_dir(self.root, self.run_id).parent.rmdir()


def run_row(**fields: Any) -> dict[str, Any]:
    """A ``runs`` row with the version columns filled in."""
    return {
        **fields,
        "created_at": dt.datetime.now(dt.timezone.utc),
        "finished_at": None,
        "schema_version": SCHEMA_VERSION,
        "beamscope_version": __version__,
        "decoding": json.dumps(fields["decoding"], sort_keys=True),
        "options": json.dumps(fields["options"], sort_keys=True),
    }
