"""Attention stage records: the attention rows, and the attention columns of the step and source
token tables."""

from __future__ import annotations

import numpy as np


def entropy(w: np.ndarray) -> np.ndarray:
    """Entropy over the last axis of attention rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(w > 0, w * np.log(w), 0.0).sum(-1)


def step_columns(mean: np.ndarray) -> dict[str, np.ndarray]:
    """``target_steps`` / ``reference_steps`` columns from the mean attention [steps, src]."""
    return dict(attn_argmax_src_pos=mean.argmax(-1), attn_entropy=entropy(mean))


def source_columns(mean: np.ndarray) -> dict[str, np.ndarray]:
    """``source_tokens`` columns: the attention each source token received over the hypothesis."""
    return dict(attention_received=mean.sum(0))


def attention_rows(full: np.ndarray, mean: np.ndarray) -> list[dict[str, np.ndarray]]:
    """``attention`` rows of one decoding: the mean over layers and heads (layer = head = -1) and,
    when stored per head, every layer and head. ``full`` [steps, layers, heads, src], ``mean``
    [steps, src], both cut to the real source tokens."""
    blocks = [(mean[:, None, None, :], True)]
    if full.shape[1] * full.shape[2] > 1:
        blocks.append((full, False))
    out = []
    for w, is_mean in blocks:
        step, layer, head, pos = (a.ravel() for a in np.indices(w.shape))
        out.append(
            dict(
                step=step,
                src_pos=pos,
                layer=np.full(w.size, -1) if is_mean else layer,
                head=np.full(w.size, -1) if is_mean else head,
                weight=w.ravel(),
            )
        )
    return out
