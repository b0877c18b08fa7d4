"""Calibrating the blame: thresholds of the stage rule chosen on planted faults of known stage.

The faults (``pipeline.fault_runs``) are cut in two halves by sentence; the thresholds are those
of a grid that maximise the mean F1 of the five stages on the 'fit' half (ties: the ones nearest
the defaults), and are measured on the 'held_out' half. The rule is ``pipeline.taxonomy.blame``,
re-applied to the signals each faulted sentence recorded: nothing is traced again. The neighbour
count k is not calibrated (the agreement was searched with the run's k).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.taxonomy import Signals, Taxonomy, blame
from schemas.stages import STAGES
from schemas.tables import TABLES

TABLE = "blame_calibration"
HALVES = ("fit", "held_out")
TARGET_PRECISION, TARGET_RECALL = 0.8, 0.7


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in np.arange(start, stop + step / 2, step))


GRID = {  # the last (encoder: first) value of each never fires
    "attn_entropy": (*_steps(0.4, 1.0, 0.1), 1.01),
    "coverage": (0.2, 0.3, 0.5, 0.7, 0.9, 1.2, 1e9),
    "encoder_agreement": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    "decoder_agreement": (0.2, 0.3, 0.5, 0.7, 0.9, 1.01),
    "attention_agreement": (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.01),
}


@dataclass(frozen=True)
class Faults:
    """Planted faults that changed the output: their stage, the signals the rule reads, and the
    stage the trace blamed (under the thresholds it recorded)."""

    sent_id: np.ndarray
    planted: np.ndarray  # stage names
    blamed: np.ndarray
    signals: Signals  # arrays

    def take(self, keep: np.ndarray) -> Faults:
        sig = Signals(*(np.asarray(v)[keep] for v in dataclasses.astuple(self.signals)))
        return Faults(self.sent_id[keep], self.planted[keep], self.blamed[keep], sig)


def halves(sent_id: np.ndarray, seed: int = 0) -> np.ndarray:
    """'fit' or 'held_out' for each fault, half and half by a seeded hash of its sentence."""
    rng = np.random.default_rng(seed)
    ids = np.unique(sent_id)
    fit = set(ids[rng.permutation(len(ids))[: len(ids) // 2]].tolist())
    return np.array([HALVES[0] if s in fit else HALVES[1] for s in sent_id.tolist()])


def scores(planted: np.ndarray, blamed: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per stage: (precision, recall) of the blame; NaN where nothing was blamed / planted."""
    out = {}
    for stage in STAGES:
        hit = float(((planted == stage) & (blamed == stage)).sum())
        n_blamed, n_planted = float((blamed == stage).sum()), float((planted == stage).sum())
        out[stage] = (hit / n_blamed if n_blamed else np.nan, hit / n_planted if n_planted else np.nan)
    return out


def macro_f1(planted: np.ndarray, blamed: np.ndarray) -> float:
    """Mean F1 over the stages planted (a stage never blamed scores 0)."""
    f1 = []
    for stage, (p, r) in scores(planted, blamed).items():
        if (planted == stage).any():
            f1.append(0.0 if not p or not r or np.isnan(p) else 2 * p * r / (p + r))
    return float(np.mean(f1)) if f1 else 0.0


def fit(faults: Faults, base: Taxonomy) -> Taxonomy:
    """The grid's thresholds with the best mean F1 on ``faults`` (ties: nearest ``base``)."""
    best, best_key = base, (-1.0, 0.0)
    names = list(GRID)
    for values in itertools.product(*GRID.values()):
        tax = dataclasses.replace(base, **dict(zip(names, values, strict=True)))
        distance = sum(abs(min(v, 2.0) - getattr(base, k)) for k, v in zip(names, values, strict=True))
        key = (round(macro_f1(faults.planted, blame(faults.signals, tax)), 12), -distance)
        if key > best_key:
            best, best_key = tax, key
    return best


@dataclass(frozen=True)
class Calibration:
    """The benchmark of one run's faults under the recorded and the calibrated thresholds."""

    run_id: str
    model_name: str
    model_hash: str
    n: int  # faults planted per stage
    seed: int
    recorded: Taxonomy
    calibrated: Taxonomy
    faults: Faults
    half: np.ndarray  # per fault: 'fit' | 'held_out'
    created_at: dt.datetime

    def blamed(self, taxonomy: str) -> np.ndarray:
        tax = self.recorded if taxonomy == "recorded" else self.calibrated
        return blame(self.faults.signals, tax)

    def table(self) -> pa.Table:
        """Its ``blame_calibration`` rows (confusion counts per taxonomy and half)."""
        rows = []
        for taxonomy in ("recorded", "calibrated"):
            tax = self.recorded if taxonomy == "recorded" else self.calibrated
            blamed = self.blamed(taxonomy)
            for half in HALVES:
                sel = self.half == half
                pairs = zip(self.faults.planted[sel].tolist(), blamed[sel].tolist(), strict=True)
                for (planted, got), n in sorted(Counter(pairs).items()):
                    rows.append(
                        dict(
                            run_id=self.run_id,
                            created_at=self.created_at,
                            model_name=self.model_name,
                            model_hash=self.model_hash,
                            faults_per_stage=self.n,
                            seed=self.seed,
                            taxonomy=taxonomy,
                            thresholds=json.dumps(dataclasses.asdict(tax), sort_keys=True),
                            half=half,
                            planted=planted,
                            blamed=got,
                            n=n,
                        )
                    )
        return pa.Table.from_pylist(rows, schema=TABLES[TABLE])


def calibrate(run: dict[str, Any], faults: Faults, n: int, seed: int = 0) -> Calibration:
    """Thresholds for run ``run`` (its ``runs`` row) fitted on half of ``faults`` (``n`` planted a
    stage with ``seed``, which also cuts the halves)."""
    recorded = Taxonomy.from_options(json.loads(run["options"]).get("taxonomy", {}))
    half = halves(faults.sent_id, seed)
    calibrated = fit(faults.take(half == HALVES[0]), recorded)
    now = dt.datetime.now(dt.timezone.utc)
    return Calibration(
        run["run_id"], run["model_name"], run["model_hash"], n, seed, recorded, calibrated, faults, half, now
    )


def calibrated_taxonomy(root: Path, model_hash: str) -> tuple[Taxonomy, dict[str, Any]] | None:
    """The thresholds of the latest calibration of the model with ``model_hash`` in the warehouse
    at ``root``, and what they come from (run, date); None when it has none."""
    found = []
    for part in sorted((root / "tables" / TABLE).glob("*/*.parquet")) if model_hash else ():
        with part.open("rb") as f:
            rows = pq.read_table(f, columns=["run_id", "created_at", "model_hash", "taxonomy", "thresholds"])
        found += [
            r for r in rows.to_pylist() if r["model_hash"] == model_hash and r["taxonomy"] == "calibrated"
        ]
    if not found:
        return None
    latest = max(found, key=lambda r: r["created_at"])
    info = {"run": latest["run_id"], "created_at": latest["created_at"].isoformat(timespec="seconds")}
    return Taxonomy.from_options(json.loads(latest["thresholds"])), info
