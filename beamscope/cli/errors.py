"""``beamscope errors``: report the error statistics of a run."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "errors",
        "report the error statistics of a run",
        "  beamscope errors --warehouse wh\n"
        "  beamscope errors --warehouse wh --run dates-transformer.dates-test-2000.test --format json\n"
        "Stages and tags are defined in pipeline/taxonomy.py (see README, 'Error taxonomy').\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", default=None, help="run id (default: the newest run)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--top", type=int, default=10, help="rows of confusions and worst sentences")
    return p


def run(a: argparse.Namespace) -> int:
    from warehouse import open_warehouse
    from warehouse.report import error_report, format_report

    with open_warehouse(a.warehouse) as wh:
        report = error_report(wh, a.run, a.top)
    print(report.to_json() if a.format == "json" else format_report(report))
    return 0
