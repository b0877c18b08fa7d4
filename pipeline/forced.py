"""Forced (teacher-forced) decoding of references: what the model thinks of the right answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.batching import pad
from pipeline.models.protocol import Encoded, Seq2SeqAdapter
from pipeline.stepstats import entropy, mean_attention, rank_of


@dataclass
class ForcedTrace:
    """Per reference step (end-of-sentence included): the model's view of that token."""

    token_ids: np.ndarray  # [steps]
    logprobs: np.ndarray
    ranks: np.ndarray  # 1 = the model's top-1
    top1_ids: np.ndarray
    top1_logprobs: np.ndarray
    entropy: np.ndarray
    attention: np.ndarray  # [steps, layers, heads, src] (1, 1 for the mean)
    mean_attention: np.ndarray  # [steps, src]
    states: np.ndarray  # [steps, d]
    logprob: float  # summed
    score: float  # length-normalised like the beam's hypotheses


def force_decode(
    model: Seq2SeqAdapter,
    enc: Encoded,
    refs: Sequence[Sequence[int]],
    length_penalty: float,
    per_head: bool = False,
) -> list[ForcedTrace]:
    """Score each reference (ids without end-of-sentence) under the model, step by step."""
    dev = enc.states.device
    tgt_in, _ = pad([[model.bos_id, *r] for r in refs], model.pad_id, dev)
    tgt_out, mask = pad([[*r, model.eos_id] for r in refs], model.pad_id, dev)
    out = model.forced(enc, tgt_in)
    b, t, v = out.logits.shape
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)
    for step in range(t):
        logprobs[:, step] = model.adjust_logprobs(logprobs[:, step], step)
    chosen = logprobs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
    top1_lp, top1 = logprobs.max(-1)
    mean = mean_attention(out.cross_attention)
    full = out.cross_attention if per_head else mean[:, :, None, None, :]
    arrays = [
        x.float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()
        for x in (
            tgt_out,
            chosen,
            rank_of(logprobs, tgt_out),
            top1,
            top1_lp,
            entropy(logprobs),
            full,
            mean,
            out.states,
        )
    ]
    lengths = mask.sum(1).tolist()
    traces = []
    for i, n in enumerate(lengths):
        ids, lp, rank, t1, t1lp, ent, att, mean_i, states = (a[i, :n] for a in arrays)
        total = float(lp.sum())
        traces.append(
            ForcedTrace(
                ids, lp, rank, t1, t1lp, ent, att, mean_i, states, total, total / float(n) ** length_penalty
            )
        )
    return traces
