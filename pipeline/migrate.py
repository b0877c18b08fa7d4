"""``beamscope migrate``: upgrade a warehouse written by an older schema version, in place.

Only versions listed in ``schemas.migrations.MIGRATIONS`` migrate. New run tables are derived first
(``vocabulary``: every (id, token) pair the run's rows show; ``state_clusters`` and
``state_cluster_members``: ``pipeline.clusters`` over the run's parts and decoder states), then
every Parquet part of an affected table is rewritten (temporary file + rename, as the writer does)
with the current columns: added ones NULL, recast ones narrowed, dropped ones gone. The manifest's
``schema_version`` is bumped last, under the writer lock, so readers refuse the warehouse until
every part is done. Resumable and idempotent: a part that already has the current schema is left
alone, and a killed migration is finished by running it again. LanceDB vector tables and the
``runs`` rows (whose ``schema_version`` says what wrote each run) are not changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.clusters import CLUSTER_TABLES, run_clusters
from pipeline.writer.files import locked, remove_orphan_temps, write_manifest, write_parquet
from pipeline.writer.run import RunWriter
from schemas import SCHEMA_VERSION, TABLES, SchemaVersionError, WarehouseError
from schemas.layout import (
    crash_point,
    migratable,
    part_path,
    read_manifest,
    warehouse_root,
)
from schemas.migrations import changes_since
from schemas.version import beamscope_version


@dataclass(frozen=True)
class MigrateConfig:
    """Options of ``beamscope migrate``."""

    warehouse: str


@dataclass(frozen=True)
class MigrationReport:
    from_version: int
    to_version: int
    parts_checked: int
    parts_rewritten: int


def migrate(cfg: MigrateConfig) -> MigrationReport:
    """Bring the warehouse at ``cfg.warehouse`` to ``SCHEMA_VERSION`` (a no-op when it is there)."""
    root = warehouse_root(cfg.warehouse)
    with locked(root) if root.is_dir() else contextlib.nullcontext():  # else read_manifest explains
        manifest = read_manifest(root, any_version=True)
        version = manifest["schema_version"]
        if version == SCHEMA_VERSION:
            return MigrationReport(version, version, 0, 0)
        if version > SCHEMA_VERSION:
            read_manifest(root)  # raises: written by a newer beamscope
        if not migratable(version):
            raise SchemaVersionError(
                f"written by schema version {version}, which cannot be migrated to {SCHEMA_VERSION}; "
                "re-trace the runs into a new warehouse",
                path=str(root / "manifest.json"),
            )
        changes = changes_since(version)
        for table in changes.run_tables:
            for run, entry in manifest["runs"].items():
                _derive_run_table(root, table, run, entry.get("status") == "complete")
        tables = sorted({*changes.added, *changes.dropped, *changes.recast})
        checked = rewritten = 0
        for table in tables:
            table_dir = root / "tables" / table
            if not table_dir.is_dir():
                continue
            for run in sorted(table_dir.iterdir()):
                remove_orphan_temps(run, recursive=False)
            for path in sorted(table_dir.glob("*/*.parquet")):
                checked += 1
                rewritten += _upgrade_part(path, table, version)
        manifest["schema_version"] = SCHEMA_VERSION
        manifest.setdefault("migrations", []).append(
            {
                "from": version,
                "to": SCHEMA_VERSION,
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "beamscope_version": beamscope_version(),
            }
        )
        write_manifest(root, manifest)
    return MigrationReport(version, SCHEMA_VERSION, checked, rewritten)


def _upgrade_part(path: Path, table: str, version: int) -> bool:
    """Rewrite one part with the current schema; False if it has it already."""
    schema, changes = TABLES[table], changes_since(version)
    try:
        with path.open("rb") as f:  # a local or an S3 warehouse
            old_schema = pq.read_schema(f)
    except (pa.ArrowException, OSError) as e:
        raise WarehouseError(f"damaged Parquet part ({e})", path=str(path)) from None
    names = old_schema.names
    if old_schema.remove_metadata().equals(schema):
        return False
    added, dropped = set(changes.added.get(table, ())), set(changes.dropped.get(table, ()))
    if not set(names) <= set(schema.names) | dropped or not set(schema.names) - set(names) <= added:
        raise WarehouseError(
            f"unexpected columns for schema version {version} of table {table}: {', '.join(names)}",
            path=str(path),
        )
    with path.open("rb") as f:
        old = pq.read_table(f)
    columns = [
        old[f.name].cast(f.type) if f.name in names else pa.nulls(old.num_rows, f.type) for f in schema
    ]
    write_parquet(pa.Table.from_arrays(columns, schema=schema), path)
    crash_point("migrate")
    return True


# where each side's (id, token) pairs show in the tables of an older run
_PAIRS = {
    "src": [("source_tokens", "token_id", "token")],
    "tgt": [
        ("target_steps", "token_id", "token"),
        ("target_steps", "topk_token_ids", "topk_tokens"),
        ("reference_steps", "token_id", "token"),
        ("reference_steps", "top1_token_id", "top1_token"),
        ("beam_nodes", "token_id", "token"),
    ],
}


def _derive_run_table(root: Path, table: str, run: str, complete: bool) -> None:
    """Write ``table`` of an older ``run``, unless it is there: ``vocabulary``, or the state
    clusters of a complete run (a run still being traced gets them when it completes)."""
    path = part_path(root, table, run, 0)
    if path.exists():
        return
    if table in CLUSTER_TABLES:
        if complete:  # both at once (the other one too, if it is missing)
            writer = RunWriter(root, run)
            derived = run_clusters(writer)
            writer.write_run_tables(
                {t: derived[t] for t in CLUSTER_TABLES if not part_path(root, t, run, 0).exists()}
            )
        return
    rows = []
    for side, sources in _PAIRS.items():
        tokens: dict[int, str] = {}
        for source, id_col, token_col in sources:
            for part in sorted((root / "tables" / source / f"run={run}").glob("*.parquet")):
                with part.open("rb") as f:
                    if token_col not in pq.read_schema(f).names:
                        continue
                    t = pq.read_table(f, columns=[id_col, token_col])
                ids, toks = t[id_col].combine_chunks(), t[token_col].combine_chunks()
                if pa.types.is_list(ids.type):
                    ids, toks = ids.flatten(), toks.flatten()
                tokens.update(zip(ids.to_pylist(), toks.to_pylist(), strict=True))
        size = max(tokens, default=-1) + 1  # ids never shown stay null
        rows += [{"run_id": run, "side": side, "token_id": i, "token": tokens.get(i)} for i in range(size)]
    write_parquet(pa.Table.from_pylist(rows, schema=TABLES["vocabulary"]), path)
