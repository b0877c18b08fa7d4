"""``beamscope migrate``: upgrade a warehouse written by an older schema version, in place.

Only versions listed in ``schemas.tables.ADDED_COLUMNS`` migrate; each of them only added
nullable columns, so every Parquet part of an affected table is rewritten (temporary file +
rename, as the writer does) with the new columns as NULL, in the current column order. The
manifest's ``schema_version`` is bumped last, under the writer lock, so readers refuse the
warehouse until every part is done. Resumable and idempotent: a part that already has the
current columns is left alone, and a killed migration is finished by running it again.
LanceDB vector tables and the ``runs`` rows (whose ``schema_version`` says what wrote each run)
are not changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from beamscope import __version__
from pipeline.writer import write_parquet
from schemas import SCHEMA_VERSION, TABLES, SchemaVersionError, WarehouseError
from schemas.layout import (
    crash_point,
    locked,
    migratable,
    read_manifest,
    remove_orphan_temps,
    write_manifest,
)
from schemas.tables import ADDED_COLUMNS, columns_at


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
    root = Path(cfg.warehouse)
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
        tables = sorted({t for v in range(version + 1, SCHEMA_VERSION + 1) for t in ADDED_COLUMNS[v]})
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
                "beamscope_version": __version__,
            }
        )
        write_manifest(root, manifest)
    return MigrationReport(version, SCHEMA_VERSION, checked, rewritten)


def _upgrade_part(path: Path, table: str, version: int) -> bool:
    """Rewrite one part with the current columns (new ones NULL); False if it has them already."""
    schema = TABLES[table]
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise WarehouseError(f"damaged Parquet part ({e})", path=str(path)) from None
    if names == schema.names:
        return False
    added = set(schema.names) - set(columns_at(table, version))
    if not set(names) <= set(schema.names) or not set(schema.names) - set(names) <= added:
        raise WarehouseError(
            f"unexpected columns for schema version {version} of table {table}: {', '.join(names)}",
            path=str(path),
        )
    old = pq.read_table(path)
    columns = [
        old[f.name].cast(f.type) if f.name in names else pa.nulls(old.num_rows, f.type) for f in schema
    ]
    write_parquet(pa.Table.from_arrays(columns, schema=schema), path)
    crash_point("migrate")
    return True
