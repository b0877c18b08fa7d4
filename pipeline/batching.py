"""Padding and length-sorted batching."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad ``seqs`` into ids [batch, longest] and a mask (True at real tokens)."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs])
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    return ids.to(device), mask.to(device)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (stable, longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
