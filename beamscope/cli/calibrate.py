"""``beamscope calibrate``: how often is the blamed stage right? Faults of known stage planted in a
run's sentences, the blame measured on them, and its thresholds chosen on half of them."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_device, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "calibrate",
        "plant faults of known stage in a run's sentences, measure the blame on them, calibrate it",
        "  beamscope calibrate --warehouse wh --run numbers-lstm.numbers-test-2000.test\n"
        "  beamscope calibrate --warehouse wh --run RUN --faults 100 --stages encoder,attention\n"
        "Each stage's faults are traced as run RUN.fault-STAGE-nN-seedS with the run's own model and\n"
        "decoding (the reference: the run's own output); the blame needs the model's traced training run,\n"
        "as in a trace. The thresholds are fitted on half of the faults and measured on the other half;\n"
        "they are kept in the run's blame_calibration table, and later traces of the same model use them.\n"
        "Interrupted: run it again. Faults, measures and targets: README, Error taxonomy.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--run", required=True, help="run id of the run to plant faults in")
    p.add_argument("--faults", type=int, default=200, help="faults per stage (default 200)")
    p.add_argument("--stages", default=None, help="comma-separated stages to plant (default: all five)")
    p.add_argument("--seed", type=int, default=0, help="draws the sentences, steps and faults (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    from beamscope.calibrate import calibrate_run
    from pipeline.fault_runs import FaultConfig
    from schemas.stages import STAGES
    from warehouse import open_warehouse
    from warehouse.blame import format_calibration

    stages = STAGES if a.stages is None else tuple(s.strip() for s in a.stages.split(",") if s.strip())
    s = calibrate_run(FaultConfig(a.warehouse, a.run, stages, a.faults, a.seed, a.device, a.threads))
    with open_warehouse(s.warehouse) as wh:
        print(format_calibration(wh, a.run))
    n = len(s.calibration.faults.planted)
    print(
        f"\nthe re-applied rule gives the recorded blame for {s.reproduced} of {n} faults; {s.seconds:.0f}s"
    )
    return 0
