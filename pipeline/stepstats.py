"""Per-step scores computed from a distribution: small functions over batched tensors."""

from __future__ import annotations

import torch
from torch import Tensor


def entropy(logprobs: Tensor) -> Tensor:
    """Entropy (nats) of distributions given as log-probabilities [..., n]; -inf entries are 0."""
    p = logprobs.exp()
    return -torch.where(p > 0, p * logprobs, torch.zeros_like(p)).sum(-1)


def rank_of(logprobs: Tensor, ids: Tensor) -> Tensor:
    """1-based rank of token ``ids`` [...] in ``logprobs`` [..., vocab] (1 = top-1)."""
    chosen = logprobs.gather(-1, ids.unsqueeze(-1))
    return (logprobs > chosen).sum(-1) + 1


def mean_attention(attn: Tensor) -> Tensor:
    """Mean over layers and heads: [..., layers, heads, src] -> [..., src]."""
    return attn.mean(dim=(-3, -2))
