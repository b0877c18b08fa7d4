"""``beamscope attribute``: attribution of every produced token of a run (or of chosen sentences)."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_device, add_verb
from schemas.tables import ATTRIBUTION_METHODS


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "attribute",
        "attribute each produced token's log-probability to the source and earlier target tokens",
        "  beamscope attribute --warehouse wh --run numbers-lstm.numbers-test-2000.test\n"
        "  beamscope attribute --warehouse wh --run RUN --method grad_x_input --where 'NOT exact_match'\n"
        "Runs the run's own model (its hash must match) with captum; writes the tables attribution and\n"
        "attribution_steps. ig integrates from the PAD token's embedding at every position. A run keeps one\n"
        "attribution: another method, step count or --where replaces it. Interrupted: run it again.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--method", choices=ATTRIBUTION_METHODS, default="ig", help="attribution method")
    p.add_argument("--steps", type=int, default=32, help="integration steps of ig")
    p.add_argument("--where", default=None, help="SQL condition on the run's sentences table (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="produced tokens per batch")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    add_device(p)
    return p


CONVERGED = 0.05  # ig's median |delta| relative to the integrated change, at most


def run(a: argparse.Namespace) -> int:
    from pipeline.attribute import AttributeConfig, attribute_run
    from pipeline.attribution import Method
    from warehouse import write_duckdb_file
    from warehouse.selection import sentence_ids

    method = Method(a.method, a.steps).check()  # refused before anything runs
    chosen = None if a.where is None else sentence_ids(a.warehouse, a.run, a.where)
    s = attribute_run(
        AttributeConfig(
            warehouse=a.warehouse,
            run=a.run,
            method=method,
            sent_ids=chosen,
            selection="all" if a.where is None else f"where {a.where}",
            device=a.device,
            batch_rows=a.batch_size,
            threads=a.threads,
        )
    )
    write_duckdb_file(s.warehouse)
    rate = f", {s.n_tokens / s.seconds:.0f} tokens/s" if s.seconds > 0 and s.n_tokens else ""
    print(
        f"run {s.run_id}: {a.method} attribution of {s.n_sentences} sentences "
        f"({s.n_tokens} tokens in {s.seconds:.1f}s{rate}; {s.resumed_parts} parts were done) -> {s.warehouse}"
    )
    if s.median_rel_delta is not None:
        verdict = "converged" if s.median_rel_delta <= CONVERGED else "NOT converged: raise --steps"
        print(
            f"ig convergence: median |delta| is {s.median_rel_delta:.1%} of |logprob - baseline| ({verdict})"
        )
    return 0
