"""A small pre-LN Transformer encoder-decoder with cached incremental decoding.

Attention is computed explicitly (not fused) so that every layer's cross-attention weights
can be captured and edited for what-if.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.models.protocol import Edit, Encoded, ForcedOutput, StepOutput
from pipeline.vocab import PAD


@dataclass(frozen=True)
class TransformerConfig:
    src_vocab: int
    tgt_vocab: int
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    max_len: int = 256


def sinusoids(length: int, d: int) -> Tensor:
    pos = torch.arange(length).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    table = torch.zeros(length, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:  # [b, t, d] -> [b, heads, t, dh]
        return x.view(x.shape[0], x.shape[1], self.heads, self.dh).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.k(x)), self.split(self.v(x))

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor, edit: Edit | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x`` [b, tq, d] attends to ``k``/``v`` [b, heads, tk, dh]; returns out, weights."""
        q = self.split(self.q(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias, dim=-1)
        if edit is not None:
            weights = edit.apply(weights)
        out = (self.drop(weights) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.o(out), weights  # weights [b, heads, tq, tk]


class FeedForward(nn.Sequential):
    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))


class EncoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.ff = FeedForward(c.d_model, c.d_ff, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, *self.attn.keys_values(h), bias)[0])
        return x + self.drop(self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(c.d_model) for _ in range(3))
        self.self_attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.cross = Attention(c.d_model, c.n_heads, c.dropout)
        self.ff = FeedForward(c.d_model, c.d_ff, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self,
        x: Tensor,
        self_kv: tuple[Tensor, Tensor],
        self_bias: Tensor,
        mem_kv: tuple[Tensor, Tensor],
        mem_bias: Tensor,
        edit: Edit | None,
    ) -> tuple[Tensor, Tensor]:
        x = x + self.drop(self.self_attn(self.ln1(x), *self_kv, self_bias)[0])
        out, weights = self.cross(self.ln2(x), *mem_kv, mem_bias, edit)
        x = x + self.drop(out)
        return x + self.drop(self.ff(self.ln3(x))), weights


class Transformer(nn.Module):
    """Encoder-decoder; ``encode``/``start``/``step``/``reorder``/``forced`` serve the adapter."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.config = c
        self.src_emb = nn.Embedding(c.src_vocab, c.d_model, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(c.tgt_vocab, c.d_model, padding_idx=PAD)
        self.register_buffer("pos", sinusoids(c.max_len + 1, c.d_model), persistent=False)
        self.enc = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_enc_layers))
        self.dec = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_dec_layers))
        self.enc_ln, self.dec_ln = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.out = nn.Linear(c.d_model, c.tgt_vocab)
        self.drop = nn.Dropout(c.dropout)
        self.scale = math.sqrt(c.d_model)
        for emb in (self.src_emb, self.tgt_emb):  # scaled by sqrt(d) on use, as in Vaswani et al.
            nn.init.normal_(emb.weight, std=c.d_model**-0.5)

    @staticmethod
    def _mask_bias(mask: Tensor) -> Tensor:  # [b, src] -> [b, 1, 1, src]
        return torch.where(mask, 0.0, float("-inf"))[:, None, None, :]

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        x = self.drop(self.src_emb(src) * self.scale + self.pos[: src.shape[1]])
        bias = self._mask_bias(mask)
        layers = []
        for layer in self.enc:
            x = layer(x, bias)
            layers.append(x)
        states = self.enc_ln(x)
        stacked = torch.stack(layers[:-1] + [states], dim=1) if all_layers else None
        return Encoded(states=states, mask=mask, layer_states=stacked)

    def _memory_kv(self, states: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [layer.cross.keys_values(states) for layer in self.dec]

    def start(self, enc: Encoded, beam: int) -> dict[str, Any]:
        states = enc.states.repeat_interleave(beam, dim=0)
        mask = enc.mask.repeat_interleave(beam, dim=0)
        return {"mem": self._memory_kv(states), "bias": self._mask_bias(mask), "self": None, "t": 0}

    def step(
        self, enc: Encoded, tokens: Tensor, cache: dict[str, Any], edit: Edit | None = None
    ) -> StepOutput:
        t = cache["t"]
        x = self.tgt_emb(tokens)[:, None, :] * self.scale + self.pos[t]
        empty = torch.zeros(tokens.shape[0], 1, 1, 1, device=tokens.device)
        new_self, attns = [], []
        for i, layer in enumerate(self.dec):
            k, v = layer.self_attn.keys_values(layer.ln1(x))
            if cache["self"] is not None:
                pk, pv = cache["self"][i]
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            new_self.append((k, v))
            x, w = layer(x, (k, v), empty, cache["mem"][i], cache["bias"], edit and edit.at_layer(i))
            attns.append(w[:, :, 0, :])
        state = self.dec_ln(x[:, 0])
        new_cache = {**cache, "self": new_self, "t": t + 1}
        return StepOutput(self.out(state), torch.stack(attns, dim=1), state, new_cache)

    def reorder(self, cache: dict[str, Any], rows: Tensor) -> dict[str, Any]:
        """Reorder the self-attention cache. The memory keys/values stay: beam search only
        permutes rows within a sentence's block, and those rows share the same memory."""
        if cache["self"] is None:
            return cache
        pick = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache["self"]]
        return {**cache, "self": pick}

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        t = tgt_in.shape[1]
        x = self.drop(self.tgt_emb(tgt_in) * self.scale + self.pos[:t])
        causal = torch.full((t, t), float("-inf"), device=tgt_in.device).triu(1)[None, None]
        mem_bias = self._mask_bias(enc.mask)
        attns = []
        for layer, kv in zip(self.dec, self._memory_kv(enc.states), strict=True):
            x, w = layer(x, layer.self_attn.keys_values(layer.ln1(x)), causal, kv, mem_bias, None)
            attns.append(w)  # [b, heads, tgt, src]
        states = self.dec_ln(x)
        attention = torch.stack(attns, dim=1).permute(0, 3, 1, 2, 4)  # [b, tgt, layers, heads, src]
        return ForcedOutput(self.out(states), attention, states)
