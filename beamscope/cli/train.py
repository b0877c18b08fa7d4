"""``beamscope train``: train a built-in model on a built-in task."""

from __future__ import annotations

import argparse
from pathlib import Path

from beamscope.cli.options import Subparsers, add_device, add_verb
from pipeline.archs import ARCH_NAMES
from pipeline.tasks import TASKS


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "train",
        "train a built-in model on a built-in task",
        "  beamscope train --task dates --arch transformer --out models/dates\n"
        "  beamscope train --task numbers --arch lstm --out models/numbers --minutes 3\n",
    )
    p.add_argument(
        "--task", default="dates", choices=tuple(TASKS), help="built-in task: " + " | ".join(TASKS)
    )
    p.add_argument("--arch", default="transformer", choices=ARCH_NAMES, help=" | ".join(ARCH_NAMES))
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--steps", type=int, default=None, help="most optimisation steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.models import resolve_device
    from pipeline.train import TrainConfig, train

    cfg = TrainConfig(task=a.task, arch=a.arch, seed=a.seed, minutes=a.minutes)
    overrides = {"max_steps": a.steps, "batch_size": a.batch_size}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    _, acc = train(cfg, Path(a.out), resolve_device(a.device))
    print(f"saved {a.out}  (validation exact match {acc:.1%})")
    return 0
