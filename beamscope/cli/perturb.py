"""``beamscope perturb``: trace perturbed copies of a run's sentences as a new run."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_device, add_verb
from pipeline.perturb import KINDS


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "perturb",
        "trace a perturbation of a run's sentences (same model, same decoding) as a new run",
        "  beamscope perturb --warehouse wh --run tiny.dates-test-200.test --kind case\n"
        "  beamscope perturb --warehouse wh --run RUN --kind plus_one --where 'exact_match'\n"
        "The variants keep their original sent_id (the new run, default RUN.perturb-KIND, pairs with RUN\n"
        "sentence by sentence); a sentence the kind cannot change is recorded in `skipped`. Kinds and\n"
        "their expectations: README, Perturbation slices. Interrupted: run it again.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", required=True, help="run id of the original run")
    p.add_argument("--kind", required=True, choices=KINDS, help="perturbation kind")
    p.add_argument("--where", default=None, help="SQL condition on the run's sentences table (default: all)")
    p.add_argument("--run-name", default=None, help="id of the new run (default: RUN.perturb-KIND)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    from pipeline.perturb_run import PerturbConfig, perturb_run
    from warehouse import open_warehouse, write_duckdb_file
    from warehouse.perturbations import format_summary, perturbation_summary
    from warehouse.selection import sentence_ids

    chosen = None if a.where is None else sentence_ids(a.warehouse, a.run, a.where)
    s = perturb_run(
        PerturbConfig(
            warehouse=a.warehouse,
            run=a.run,
            kind=a.kind,
            sent_ids=chosen,
            selection="all" if a.where is None else f"where {a.where}",
            run_name=a.run_name,
            batch_size=a.batch_size,
            threads=a.threads,
            device=a.device,
        )
    )
    write_duckdb_file(s.warehouse)
    with open_warehouse(s.warehouse) as wh:
        print(format_summary(perturbation_summary(wh, s.run_id)))
    return 0
