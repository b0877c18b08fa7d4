"""``beamscope compare``: compare two runs over the same corpus."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "compare",
        "compare two runs over the same corpus (paired bootstrap, fixed/broken sentences)",
        "  beamscope compare --warehouse wh greedy beam5\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--top", type=int, default=10)
    return p


def run(a: argparse.Namespace) -> int:
    from warehouse import open_warehouse
    from warehouse.compare import compare_runs, format_comparison

    with open_warehouse(a.warehouse) as wh:
        print(format_comparison(compare_runs(wh, a.run_a, a.run_b, a.samples), a.top, a.samples))
    return 0
