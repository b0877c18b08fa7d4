"""``beamscope perturb``: a perturbation kind's variants of a run's sentences, traced as a new run.

The new run uses the original run's own model (its hash checked) and decoding, and the original's
part size, vectors, taxonomy and neighbour agreement; its sentences keep their original sent_id,
so two-run views pair them with the original. Its ``runs.corpus`` is ``perturb:KIND:RUN`` and its
``runs.options`` hold ``perturbation``: the run it perturbs, the kind, the expectation, the
selection. It goes through ``pipeline.trace`` (same writer; resumable by part).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.corpus import Corpus
from pipeline.models import load_run_model, resolve_device, run_decoding
from pipeline.origin import complete_run, inherited, sentences
from pipeline.perturb import KINDS, check_applies, task_of, variants
from pipeline.trace import TraceConfig, TraceSummary, trace
from schemas import ConfigError
from schemas.layout import warehouse_root


@dataclass(frozen=True)
class PerturbConfig:
    """Options of ``beamscope perturb``."""

    warehouse: str
    run: str
    kind: str
    sent_ids: Collection[int] | None = None  # None: every sentence of the run
    selection: str = "all"  # how ``sent_ids`` were chosen (said in errors)
    run_name: str | None = None  # default RUN.perturb-KIND
    batch_size: int = 64
    threads: int | None = None
    device: str = "auto"


def perturb_run(cfg: PerturbConfig, progress: bool = True) -> TraceSummary:
    """Trace kind ``cfg.kind``'s variants of run ``cfg.run``'s sentences as a new run (their
    sent_ids the originals'), with the run's own model and decoding; resumable as any trace."""
    if cfg.kind not in KINDS:
        raise ConfigError(f"unknown perturbation {cfg.kind!r}; kinds: {', '.join(KINDS)}")
    kind, root = KINDS[cfg.kind], warehouse_root(cfg.warehouse)
    origin = complete_run(root, cfg.run)
    check_applies(kind, cfg.run, origin["corpus"])
    rows = sentences(root, cfg.run, cfg.sent_ids)
    if not rows:
        raise ConfigError(f"the selection ({cfg.selection}) has no sentence of run {cfg.run!r}")
    task = task_of(origin["corpus"])
    examples, skips = variants(kind, rows, task)
    if len(skips) == len(rows):
        why = next(iter(skips.values()))
        raise ConfigError(f"--kind {kind.name} has no variant of any selected sentence (e.g. {why})")
    model = load_run_model(origin, resolve_device(cfg.device))
    spec = f"perturb:{kind.name}:{cfg.run}"
    tcfg = TraceConfig(
        model=origin["model_path"],
        corpus=spec,
        warehouse=cfg.warehouse,
        split=origin["split"],
        run_name=cfg.run_name or f"{cfg.run}.perturb-{kind.name}",
        decoding=run_decoding(origin),
        batch_size=cfg.batch_size,
        **inherited(json.loads(origin["options"])),
        threads=cfg.threads,
        device=cfg.device,
        examples=Corpus(spec, origin["split"], examples),
        skips=skips,
        perturbation={"of": cfg.run, "kind": kind.name, "expect": kind.expect(task), "where": cfg.selection},
    )
    return trace(tcfg, progress, model=model)
