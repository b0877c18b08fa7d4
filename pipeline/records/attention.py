"""Attention stage records: the attention rows, and the attention columns of the step and source
token tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas import ConfigError


@dataclass(frozen=True)
class AttentionKeep:
    """Which positions of each attention row are stored, for very long sources: the ``top_k``
    largest weights, or the fewest largest ones holding ``top_p`` of the mass, or both (at most
    ``top_k``, stopping at ``top_p``). None for both: every position (the default)."""

    top_k: int | None = None
    top_p: float | None = None

    def check(self) -> AttentionKeep:
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--attention-top-k must be at least 1 (got {self.top_k})")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--attention-top-p must be in (0, 1] (got {self.top_p})")
        return self

    @property
    def prunes(self) -> bool:
        return self.top_k is not None or self.top_p is not None

    def mask(self, w: np.ndarray) -> np.ndarray:
        """Which entries of the rows ``w`` [..., src] are kept."""
        if not self.prunes:
            return np.ones(w.shape, dtype=bool)
        order = np.argsort(-w, axis=-1, kind="stable")
        ranked = np.take_along_axis(w, order, axis=-1)
        keep = np.ones(w.shape, dtype=bool)
        if self.top_k is not None:
            keep &= np.arange(w.shape[-1]) < self.top_k
        if self.top_p is not None:  # kept while the mass before it is short of top_p
            keep &= np.cumsum(ranked, axis=-1) - ranked < self.top_p
        mask = np.zeros(w.shape, dtype=bool)
        np.put_along_axis(mask, order, keep, axis=-1)
        return mask


def entropy(w: np.ndarray) -> np.ndarray:
    """Entropy over the last axis of attention rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(w > 0, w * np.log(w), 0.0).sum(-1)


def step_columns(mean: np.ndarray, keep: AttentionKeep = AttentionKeep()) -> dict[str, np.ndarray]:
    """``target_steps`` / ``reference_steps`` columns from the mean attention [steps, src] (its
    entropy and peak from the whole row; the mass of it that ``keep`` stores, NaN = all of it)."""
    kept = (mean * keep.mask(mean)).sum(-1) if keep.prunes else np.full(len(mean), np.nan)
    return dict(attn_argmax_src_pos=mean.argmax(-1), attn_entropy=entropy(mean), attn_kept_mass=kept)


def source_columns(mean: np.ndarray) -> dict[str, np.ndarray]:
    """``source_tokens`` columns: the attention each source token received over the hypothesis."""
    return dict(attention_received=mean.sum(0))


def attention_rows(
    full: np.ndarray, mean: np.ndarray, keep: AttentionKeep = AttentionKeep()
) -> list[dict[str, np.ndarray]]:
    """``attention`` rows of one decoding: the mean over layers and heads (layer = head = -1) and,
    when stored per head, every layer and head; of each row the positions ``keep`` keeps. ``full``
    [steps, layers, heads, src], ``mean`` [steps, src], both cut to the real source tokens."""
    blocks = [(mean[:, None, None, :], True)]
    if full.shape[1] * full.shape[2] > 1:
        blocks.append((full, False))
    out = []
    for w, is_mean in blocks:
        kept = keep.mask(w)
        step, layer, head, pos = np.nonzero(kept)
        n = len(step)
        out.append(
            dict(
                step=step,
                src_pos=pos,
                layer=np.full(n, -1) if is_mean else layer,
                head=np.full(n, -1) if is_mean else head,
                weight=w[kept],
            )
        )
    return out
