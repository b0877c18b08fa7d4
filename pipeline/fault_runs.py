"""Planted-fault runs of a traced run: per stage, its sentences decoded with one fault each
(``pipeline.faults``), traced as an ordinary run so that the ordinary blame runs on them.

The reference of a faulted sentence is the clean model's own output (the run's hypothesis): the
clean model is right by definition, so every change of the output is the fault's doing. Run
``RUN.fault-STAGE-nN-seedS`` holds the sentences of one stage's faults, keeping their sent_ids;
its ``runs.options['faults']`` record the run faulted, the stage, N, S and each sentence's fault. The model
is the run's own (hash checked); decoding, taxonomy, agreement and neighbour bank are the run's.
A search fault is the run's decoding with beam ``SEARCH_BEAM``, of the sentences where that
changes the output. Every run goes through ``pipeline.trace`` (same writer; resumable by part).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.batching import pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.corpus import Corpus, Example
from pipeline.faults import SEARCH_BEAM, Clean, FaultyModel, plan_faults
from pipeline.models import load_run_model, resolve_device, run_decoding
from pipeline.models.protocol import Seq2SeqAdapter
from pipeline.origin import complete_run, inherited, sentences
from pipeline.trace import TraceConfig, trace
from pipeline.writer.run import RunWriter
from schemas import ConfigError
from schemas.layout import warehouse_root
from schemas.stages import STAGES, Stage


@dataclass(frozen=True)
class FaultConfig:
    """Options of the planted-fault runs (``beamscope calibrate``)."""

    warehouse: str
    run: str
    stages: tuple[str, ...] = STAGES
    n: int = 200  # sentences drawn per stage (search: of those where the beam matters)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def check(self) -> FaultConfig:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
        if self.n < 1:
            raise ConfigError(f"--faults must be at least 1 (got {self.n})")
        return self


def fault_run_id(run: str, stage: str, n: int, seed: int) -> str:
    """The run of ``stage``'s faults in ``run``, planted ``n`` a stage with ``seed`` (another
    planting is another run: calibrating again with other settings never meets the old runs)."""
    return f"{run}.fault-{stage}-n{n}-seed{seed}"


def fault_runs(cfg: FaultConfig, progress: bool = True) -> dict[str, str]:
    """Trace the planted-fault run of each stage of ``cfg.stages``; stage -> run id (a stage where
    no fault could be planted has none)."""
    cfg.check()
    root = warehouse_root(cfg.warehouse)
    origin = complete_run(root, cfg.run)
    model = load_run_model(origin, resolve_device(cfg.device))
    decoding = run_decoding(origin)
    clean = _clean(root, cfg.run, model)
    if not clean:
        raise ConfigError(f"run {cfg.run!r} has no decoded sentence to plant faults in")
    runs = {}
    for stage in cfg.stages:
        picked = _sample(clean, cfg.seed, stage)
        if stage == Stage.SEARCH:
            faulted, planted = model, _search_faults(model, picked, decoding, cfg.n)
            stage_decoding = dataclasses.replace(decoding, beam=SEARCH_BEAM)
        else:
            picked = picked[: cfg.n]
            faults = plan_faults(model, picked, Stage(stage), cfg.seed)
            by_src = {tuple(c.src_ids): faults[c.sent_id] for c in picked if c.sent_id in faults}
            faulted, stage_decoding = FaultyModel(model, by_src), decoding
            planted = {sid: f.describe() for sid, f in faults.items()}
        if planted:
            runs[stage] = _trace(cfg, root, origin, faulted, stage_decoding, stage, planted, progress)
    return runs


def _trace(
    cfg: FaultConfig,
    root: Path,
    origin: dict[str, Any],
    model: Seq2SeqAdapter,
    decoding: DecodeConfig,
    stage: str,
    planted: dict[int, dict[str, Any]],
    progress: bool,
) -> str:
    rows = {r["sent_id"]: r for r in sentences(root, cfg.run, planted, ("source", "hypothesis"))}
    spec = f"faults:{stage}:{cfg.run}"
    examples = [
        Example(sid, rows[sid]["source"], rows[sid]["hypothesis"], spec, sid) for sid in sorted(planted)
    ]
    options = json.loads(origin["options"])
    run_id = fault_run_id(cfg.run, stage, cfg.n, cfg.seed)
    trace(
        TraceConfig(
            model=origin["model_path"],
            corpus=spec,
            warehouse=cfg.warehouse,
            split=origin["split"],
            run_name=run_id,
            decoding=decoding,
            batch_size=64,
            **inherited(options),
            threads=cfg.threads,
            device=cfg.device,
            examples=Corpus(spec, origin["split"], examples),
            faults={"of": cfg.run, "stage": stage, "n": cfg.n, "seed": cfg.seed, "sentences": planted},
        ),
        progress,
        model=model,
    )
    return run_id


def _clean(root: Path, run: str, model: Seq2SeqAdapter) -> list[Clean]:
    """The run's decoded sentences with their ids: those it got right (or had no reference for),
    unless there are none (a clean output is the reference either way)."""
    steps = RunWriter(root, run).read_table("target_steps", ["sent_id", "step", "token_id"]).to_pydict()
    out: dict[int, list[int]] = {}
    for i in np.lexsort((steps["step"], steps["sent_id"])):
        out.setdefault(steps["sent_id"][i], []).append(steps["token_id"][i])
    rows = [r for r in sentences(root, run, None, ("source", "exact_match")) if r["sent_id"] in out]
    right = [r for r in rows if r["exact_match"] is not False]
    return [Clean(r["sent_id"], model.src_ids(r["source"]), out[r["sent_id"]]) for r in right or rows]


def _sample(clean: list[Clean], seed: int, stage: str) -> list[Clean]:
    """The sentences with distinct sources (a fault is found by its source), in a random order."""
    unique = list({tuple(c.src_ids): c for c in clean}.values())
    rng = np.random.default_rng([seed, STAGES.index(stage)])
    return [unique[i] for i in rng.permutation(len(unique))]


@torch.inference_mode()
def _search_faults(
    model: Seq2SeqAdapter, clean: list[Clean], decoding: DecodeConfig, n: int, batch: int = 64
) -> dict[int, dict[str, Any]]:
    """The first ``n`` sentences of ``clean`` whose output beam ``SEARCH_BEAM`` changes."""
    if decoding.beam <= SEARCH_BEAM:
        return {}
    narrow = dataclasses.replace(decoding, beam=SEARCH_BEAM)
    changed: dict[int, dict[str, Any]] = {}
    for start in range(0, len(clean), batch):
        if len(changed) >= n:
            break
        chunk = clean[start : start + batch]
        src, mask = pad([c.src_ids for c in chunk], model.pad_id, model.device)
        for c, d in zip(chunk, beam_search(model, model.encode(src, mask), narrow), strict=True):
            if [*d.ids, *([model.eos_id] if d.ended else [])] != c.out_ids:
                changed[c.sent_id] = {"stage": str(Stage.SEARCH), "beam": SEARCH_BEAM}
    return dict(list(changed.items())[:n])
