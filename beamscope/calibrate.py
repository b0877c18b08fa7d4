"""``beamscope calibrate``: plant faults of known stage in a run's sentences, measure how often the
blame names the right stage, and choose the stage rule's thresholds on half of the faults.

Pipeline (``pipeline.fault_runs``) traces the faulted runs, the warehouse (``warehouse.blame``)
reads back each counted fault with the signals its blame read, ``pipeline.calibration`` fits the
thresholds, and the result is the run's ``blame_calibration`` table (written once, atomically;
calibrating again replaces it). Later traces of the same model use the calibrated thresholds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.calibration import TABLE, Calibration, Faults, calibrate
from pipeline.fault_runs import FaultConfig, fault_runs
from pipeline.origin import complete_run
from pipeline.taxonomy import blame
from pipeline.writer.run import RunWriter
from schemas import ConfigError
from schemas.layout import warehouse_root
from warehouse import open_warehouse, write_duckdb_file
from warehouse.blame import planted_faults, planted_signals


@dataclass(frozen=True)
class CalibrationSummary:
    warehouse: Path
    fault_runs: dict[str, str]  # stage -> run id
    calibration: Calibration
    reproduced: int  # faults whose recorded blame the re-applied rule gives again
    seconds: float


def calibrate_run(cfg: FaultConfig, progress: bool = True) -> CalibrationSummary:
    """Plant, trace, measure and calibrate (see the module doc); resumable as the traces are."""
    start = time.perf_counter()
    runs = fault_runs(cfg, progress)
    root = warehouse_root(cfg.warehouse)
    with open_warehouse(root) as wh:
        found = planted_faults(wh, cfg.run, cfg.n, cfg.seed)
    if found.is_empty():
        raise ConfigError(f"no planted fault changed an output of run {cfg.run!r}: nothing to measure")
    faults = Faults(
        found["sent_id"].to_numpy(),
        found["planted"].to_numpy().astype(str),
        found["blamed_stage"].to_numpy().astype(str),
        planted_signals(found),
    )
    calibration = calibrate(complete_run(root, cfg.run), faults, cfg.n, cfg.seed)
    reproduced = int((blame(faults.signals, calibration.recorded) == faults.blamed).sum())
    RunWriter(root, cfg.run).write_run_tables({TABLE: calibration.table()})
    write_duckdb_file(root)
    return CalibrationSummary(root, runs, calibration, reproduced, time.perf_counter() - start)
