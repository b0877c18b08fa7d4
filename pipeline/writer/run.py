"""One run's writer: its parts, vectors and derived tables, and its manifest entry."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.writer.files import (
    atomic_path,
    locked,
    remove_orphan_temps,
    remove_tree,
    write_manifest,
    write_parquet,
)
from schemas import SCHEMA_VERSION, TABLES, VECTOR_TABLES, WarehouseError
from schemas.layout import (
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
                remove_tree(run_dir(self.root, table, self.run_id))
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
        remove_tree(staging)
        if not is_remote(staging):
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
