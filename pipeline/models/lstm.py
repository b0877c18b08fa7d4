"""An LSTM encoder-decoder with global (Luong "general") attention and input feeding.

This is the kind of model Seq2Seq-Vis was built for: one attention distribution per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.models.protocol import Edit, Encoded, ForcedOutput, StepOutput
from pipeline.vocab import PAD


@dataclass(frozen=True)
class LSTMConfig:
    src_vocab: int
    tgt_vocab: int
    d_model: int = 128
    emb: int = 64
    dropout: float = 0.1
    max_len: int = 256


class LSTMSeq2Seq(nn.Module):
    def __init__(self, c: LSTMConfig) -> None:
        super().__init__()
        self.config = c
        self.src_emb = nn.Embedding(c.src_vocab, c.emb, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, c.emb, padding_idx=PAD)
        self.encoder = nn.LSTM(c.emb, c.d_model // 2, batch_first=True, bidirectional=True)
        self.init_h = nn.Linear(c.d_model, c.d_model)
        self.cell = nn.LSTMCell(c.emb + c.d_model, c.d_model)
        self.attn_w = nn.Linear(c.d_model, c.d_model, bias=False)
        self.combine = nn.Linear(2 * c.d_model, c.d_model)
        self.out = nn.Linear(c.d_model, c.tgt_vocab)
        self.drop = nn.Dropout(c.dropout)

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.src_emb(src)), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        layers = states[:, None] if all_layers else None
        return Encoded(states=states, mask=mask, layer_states=layers)

    def start(self, enc: Encoded, beam: int) -> dict[str, Any]:
        mem = enc.states.repeat_interleave(beam, dim=0)
        mask = enc.mask.repeat_interleave(beam, dim=0)
        mean = (mem * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        h = torch.tanh(self.init_h(mean))
        return {
            "mem": mem,
            "keys": self.attn_w(mem),
            "mask": mask,
            "h": h,
            "c": torch.zeros_like(h),
            "feed": torch.zeros_like(h),
            "t": 0,
        }

    def step(
        self, enc: Encoded, tokens: Tensor, cache: dict[str, Any], edit: Edit | None = None
    ) -> StepOutput:
        return self._step(self.tgt_emb(tokens), cache, edit)

    def _step(self, emb: Tensor, cache: dict[str, Any], edit: Edit | None = None) -> StepOutput:
        """One step from the embedded input tokens ``emb`` [rows, emb]."""
        x = torch.cat([self.drop(emb), cache["feed"]], dim=-1)
        h, c = self.cell(x, (cache["h"], cache["c"]))
        scores = torch.einsum("rd,rsd->rs", h, cache["keys"]).masked_fill(~cache["mask"], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if edit is not None and edit.at_layer(0) is not None:  # one layer, one head
            weights = edit.apply(weights)
        context = torch.einsum("rs,rsd->rd", weights, cache["mem"])
        state = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
        new_cache = {**cache, "h": h, "c": c, "feed": state, "t": cache["t"] + 1}
        return StepOutput(self.out(self.drop(state)), weights[:, None, None, :], state, new_cache)

    def reorder(self, cache: dict[str, Any], rows: Tensor) -> dict[str, Any]:
        """Reorder the recurrent state; the memory stays (rows only move within a sentence)."""
        moving = ("h", "c", "feed")
        return {k: v.index_select(0, rows) if k in moving else v for k, v in cache.items()}

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        cache = self.start(enc, 1)
        emb = self.tgt_emb(tgt_in)  # once for all steps (attribution replaces it whole)
        logits, attns, states = [], [], []
        for t in range(tgt_in.shape[1]):
            out = self._step(emb[:, t], cache)
            cache = out.cache
            logits.append(out.logits)
            attns.append(out.cross_attention)
            states.append(out.state)
        return ForcedOutput(torch.stack(logits, 1), torch.stack(attns, 1), torch.stack(states, 1))
