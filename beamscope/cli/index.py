"""``beamscope index``: build ANN indexes over the stored encoder/decoder states."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_bank_size, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "index",
        "build ANN indexes over the stored encoder/decoder states",
        "  beamscope index --warehouse wh\n  beamscope index --warehouse wh --run dates.train --min-rows 0\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", action="append", default=None, help="run to index (repeatable; default all)")
    p.add_argument(
        "--min-rows", type=int, default=None, help="index only tables with at least this many rows"
    )
    add_bank_size(p)
    return p


def run(a: argparse.Namespace) -> int:
    from pipeline.neighbours import KINDS, build_bank
    from pipeline.writer.indexes import DEFAULT_MIN_ROWS, build_indexes
    from schemas.layout import warehouse_root
    from warehouse import open_warehouse

    with open_warehouse(a.warehouse) as wh:
        runs = [wh.resolve_run(r) for r in a.run] if a.run else wh.run_ids()
        train = set(
            wh.sql(
                "SELECT run_id FROM runs WHERE split = 'train' "
                "AND coalesce(json_extract(options, '$.vectors')::BOOLEAN, true)"
            )["run_id"].to_list()
        )
    min_rows = DEFAULT_MIN_ROWS if a.min_rows is None else a.min_rows
    for r in build_indexes(warehouse_root(a.warehouse), runs, min_rows):
        what = f"{r.params['scalar_indexes']} built in {r.seconds:.1f}s" if r.built else "no index needed"
        print(f"{r.table}: {r.rows} vectors, {what}")
    for run_id in (r for r in runs if r in train):
        for kind in KINDS:
            info = build_bank(warehouse_root(a.warehouse), run_id, kind, a.bank_size)
            print(f"neighbour bank: {info.describe()}, built in {info.build_seconds:.1f}s")
    return 0
