"""Decoder stage records: the decoder state at each step (vectors), stored once per state."""

from __future__ import annotations

import numpy as np


def shared_steps(n_hyp: int, n_ref: int | None, diverge: int | None, edited_step: int | None) -> int:
    """Hypothesis steps whose decoder state is the reference-forced one: up to the first divergence
    the hypothesis has read the reference's prefix (unless a what-if edited the attention from an
    earlier step on). 0 without a reference."""
    if n_ref is None:
        return 0
    shared = min(n_hyp, n_ref, n_hyp if diverge is None else diverge + 1)
    return shared if edited_step is None else min(shared, edited_step)


def decoder_state_rows(
    tgt_tokens: np.ndarray, bos_id: int, ids: np.ndarray, states: np.ndarray, first: int, split: str
) -> dict[str, np.ndarray]:
    """``decoder_states`` rows of one decoding from step ``first`` on (the hypothesis' earlier
    steps are the reference's forced states, stored once with the 'ref' rows): the token read and
    the token produced at each step."""
    inputs = np.concatenate([[bos_id], ids[:-1]]).astype(np.int64)
    steps = np.arange(first, len(ids))
    return dict(
        step=steps,
        token=tgt_tokens[inputs[steps]],
        next_token=tgt_tokens[ids[steps]],
        split=np.full(len(steps), split, dtype=object),
        vector=states[steps],
    )
