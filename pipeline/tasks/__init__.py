"""Built-in tasks: corpora generated deterministically from a seed, no download.

A source string belongs to exactly one split (decided by a hash of the string), so train,
valid and test never share a source.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.tasks import dates, numbers
from pipeline.vocab import Mode
from schemas import CorpusError

SPLITS = ("train", "valid", "test")
_SPLIT_SHARE = {"train": (0, 90), "valid": (90, 95), "test": (95, 100)}


@dataclass(frozen=True)
class Task:
    """A generated corpus: how to sample one pair and how its sides are tokenised."""

    name: str
    sample: Callable[[random.Random], tuple[str, str]]
    src_mode: Mode
    tgt_mode: Mode
    tgt_pieces: tuple[str, ...] = ()
    default_sizes: tuple[int, int, int] = (60_000, 2_000, 2_000)


TASKS: dict[str, Task] = {
    "dates": Task("dates", dates.sample, "char", "char"),
    "numbers": Task("numbers", numbers.sample, "word", "pieces", numbers.PIECES),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise CorpusError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def split_of(source: str) -> str:
    """The split a source string belongs to (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=4).digest(), "big") % 100
    return next(s for s, (lo, hi) in _SPLIT_SHARE.items() if lo <= bucket < hi)


def generate(task: Task, split: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """The first ``n`` distinct pairs of ``split`` drawn from the task's seeded stream."""
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    rng = random.Random(f"{task.name}:{seed}")
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    misses = 0
    while len(out) < n:
        src, tgt = task.sample(rng)
        if src in seen or split_of(src) != split:
            misses += 1
            if misses > 200 * n + 100_000:
                raise CorpusError(f"task {task.name!r} has fewer than {n} {split} sentences")
            continue
        seen.add(src)
        out.append((src, tgt))
    return out
