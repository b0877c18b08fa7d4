"""How many torch threads a process computes with: set deliberately, never torch's default."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def default_threads() -> int:
    """Torch threads for decoding: all cores but one, at most 8.

    Set deliberately: torch's default (every core) next to another busy process makes its
    threads wait on each other (2 threads on 2 cores beside a busy process: 6.6 s for 1,000
    dates sentences, against 3.3 s with 1 thread and 2.5 s with 2 threads on a quiet machine)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``default_threads()`` for None)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)
