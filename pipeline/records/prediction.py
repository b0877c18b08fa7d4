"""Prediction stage records: per step, the token produced (or forced), its probability, the
distribution's entropy and the top-k (hypothesis) or the reference token's rank (reference)."""

from __future__ import annotations

import numpy as np

from pipeline.beam import StepTrace
from pipeline.forced import ForcedTrace
from pipeline.models.protocol import Seq2SeqAdapter


def _token_columns(
    model: Seq2SeqAdapter, tgt_tokens: np.ndarray, ids: np.ndarray, logprobs: np.ndarray, ent: np.ndarray
) -> dict[str, np.ndarray]:
    return dict(
        step=np.arange(len(ids)),
        token=tgt_tokens[ids],
        token_id=ids,
        is_word_start=np.asarray(model.word_starts(list(tgt_tokens[ids]), "tgt"), dtype=bool),
        prob=np.exp(logprobs),
        logprob=logprobs,
        entropy=ent,
    )


def hypothesis_columns(
    model: Seq2SeqAdapter, tgt_tokens: np.ndarray, steps: StepTrace
) -> dict[str, np.ndarray]:
    """``target_steps`` columns of the prediction: the chosen token and the top-k."""
    return dict(
        **_token_columns(model, tgt_tokens, steps.token_ids, steps.logprobs, steps.entropy),
        topk_token_ids=steps.topk_ids,
        topk_probs=np.exp(steps.topk_logprobs),
    )


def reference_columns(
    model: Seq2SeqAdapter, tgt_tokens: np.ndarray, ref: ForcedTrace
) -> dict[str, np.ndarray]:
    """``reference_steps`` columns: the reference token's probability and rank, and the top-1."""
    return dict(
        **_token_columns(model, tgt_tokens, ref.token_ids, ref.logprobs, ref.entropy),
        rank=ref.ranks,
        top1_token_id=ref.top1_ids,
        top1_token=tgt_tokens[ref.top1_ids],
        top1_prob=np.exp(ref.top1_logprobs),
    )
