"""``beamscope migrate``: upgrade an older warehouse to this schema version, in place."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "migrate",
        "upgrade a warehouse written by an older beamscope to this schema version, in place",
        "  beamscope migrate --warehouse wh\n"
        "Rewrites the Parquet parts of the tables that gained columns (new columns are NULL; vectors are\n"
        "untouched), then bumps the manifest. Safe to interrupt and run again; a no-op when up to date.\n",
    )
    p.add_argument("--warehouse", required=True)
    return p


def run(a: argparse.Namespace) -> int:
    from pipeline.migrate import MigrateConfig, migrate
    from warehouse import write_duckdb_file

    r = migrate(MigrateConfig(warehouse=a.warehouse))
    if r.from_version == r.to_version:
        print(f"{a.warehouse}: already at schema version {r.to_version}; nothing to do")
        return 0
    write_duckdb_file(a.warehouse)
    print(
        f"{a.warehouse}: migrated from schema version {r.from_version} to {r.to_version} "
        f"({r.parts_rewritten} of {r.parts_checked} parts rewritten)"
    )
    return 0
