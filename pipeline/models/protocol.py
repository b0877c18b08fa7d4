"""The one model-adapter protocol. Beam search, forced decoding and what-if know only this.

Shape names used in comments: ``batch`` sentences, ``rows`` = batch x beam decoder rows,
``src`` source positions, ``tgt`` target steps, ``layers``/``heads`` of cross-attention,
``d`` the model width, ``vocab`` the target vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from schemas import ConfigError


@dataclass(frozen=True)
class AttentionEdit:
    """A what-if intervention on cross-attention at one target step, in every layer and head or
    in the chosen ``layers`` and ``heads`` (empty: all).

    ``set``: the step attends only to ``positions`` (uniformly); ``scale``: the weights of
    ``positions`` are multiplied by ``factor`` (0 removes them). Rows are renormalised.
    """

    step: int
    positions: tuple[int, ...]
    mode: Literal["set", "scale"] = "set"
    factor: float = 0.0
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()

    def at_layer(self, layer: int) -> AttentionEdit | None:
        """This edit where it applies to decoder layer ``layer`` (models call it per layer)."""
        return self if not self.layers or layer in self.layers else None

    def check(self, layers: int, heads: int) -> None:
        """A ConfigError unless the chosen layers and heads exist in a model of that many."""
        _in_range("layers", self.layers, layers)
        _in_range("heads", self.heads, heads)

    def apply(self, weights: Tensor) -> Tensor:
        """Edit ``weights`` [rows, heads, ..., src] or [rows, src] (rows sum to 1) and renormalise."""
        pos = torch.tensor(self.positions, device=weights.device, dtype=torch.long)
        if self.mode == "set":
            edited = torch.zeros_like(weights)
            edited[..., pos] = 1.0
        else:
            edited = weights.clone()
            edited[..., pos] = edited[..., pos] * self.factor
        total = edited.sum(-1, keepdim=True)
        edited = torch.where(total > 0, edited / total.clamp_min(1e-30), weights)
        if not self.heads:
            return edited
        n_heads = weights.shape[1] if weights.dim() > 2 else 1
        _in_range("heads", self.heads, n_heads)
        chosen = torch.zeros(n_heads, dtype=torch.bool, device=weights.device)
        chosen[list(self.heads)] = True
        return torch.where(chosen.view(1, -1, *(1,) * (weights.dim() - 2)), edited, weights)


def _in_range(name: str, chosen: tuple[int, ...], n: int) -> None:
    if any(not 0 <= i < n for i in chosen):
        raise ConfigError(f"the attention edit's {name} must be 0..{n - 1} (got {list(chosen)})")


@dataclass(frozen=True)
class RowAttentionEdit:
    """Cross-attention at one target step moved per decoder row: in every layer and head of row r
    the weight of the most attended position and that of ``positions[r]`` trade places (-1
    leaves the row as it is), so the peak moves there and the row keeps its shape. Planted
    attention faults (``pipeline.faults``) use it; the models take it where they take an
    ``AttentionEdit``, whose ``apply`` it shares."""

    step: int
    positions: tuple[int, ...]  # one per row

    def at_layer(self, layer: int) -> RowAttentionEdit:
        return self  # every layer

    def apply(self, weights: Tensor) -> Tensor:
        """Edit ``weights`` [rows, ..., src] (rows first, as every model passes them)."""
        pos = torch.tensor(self.positions, device=weights.device, dtype=torch.long)
        shape = (len(pos),) + (1,) * (weights.dim() - 1)  # rows, then broadcast over the other axes
        peak = weights.argmax(-1, keepdim=True)
        target = pos.clamp_min(0).view(shape).expand_as(peak)
        moved = weights.scatter(-1, peak, weights.gather(-1, target))
        moved = moved.scatter(-1, target, weights.gather(-1, peak))
        return torch.where((pos >= 0).view(shape), moved, weights)


Edit = AttentionEdit | RowAttentionEdit  # what a model's ``step`` takes: per decoder layer
# ``edit.at_layer(i)`` (None: not that layer), then ``.apply(weights)``


@dataclass
class Encoded:
    """What the encoder produced for a batch."""

    states: Tensor  # [batch, src, d] last layer
    mask: Tensor  # [batch, src] True at real tokens
    layer_states: Tensor | None = None  # [batch, layers, src, d] when all layers were asked for
    memory: Any = None  # adapter-specific extras the decoder needs


@dataclass
class StepOutput:
    """One incremental decoder step for every row."""

    logits: Tensor  # [rows, vocab]
    cross_attention: Tensor  # [rows, layers, heads, src]
    state: Tensor  # [rows, d] the decoder's output state (what the output layer reads)
    cache: Any


@dataclass
class ForcedOutput:
    """A teacher-forced pass over whole target prefixes."""

    logits: Tensor  # [batch, tgt, vocab]
    cross_attention: Tensor  # [batch, tgt, layers, heads, src]
    states: Tensor  # [batch, tgt, d]


@runtime_checkable
class Seq2SeqAdapter(Protocol):
    """A sequence-to-sequence model as beamscope sees it."""

    name: str
    arch: str
    device: torch.device
    bos_id: int  # the decoder's start token
    eos_id: int
    pad_id: int
    vocab_size: int  # target ids are 0..vocab_size-1
    src_vocab_size: int  # source ids are 0..src_vocab_size-1
    max_src_len: int | None  # longest source (in tokens) the model takes; None = unbounded
    unk_id: int  # the unknown token (-1 when there is none)

    def src_ids(self, text: str) -> list[int]:
        """Token ids of a source sentence (with whatever end marker the model expects)."""

    def src_pieces(self, ids: list[int]) -> list[str]:
        """The token strings of source ids, one per position."""

    def tgt_ids(self, text: str) -> list[int]:
        """Token ids of a target sentence, without the end-of-sentence token."""

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        """The token strings of target ids, one per step."""

    def word_starts(self, pieces: list[str], side: str = "tgt") -> list[bool]:
        """Whether each token string of ``side`` ('src' | 'tgt') begins a word (views group
        sub-word pieces into words with it)."""

    def detokenize(self, ids: list[int]) -> str:
        """Target ids (no specials) back to text."""

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        """Run the encoder over ``src`` [batch, src] (``mask`` [batch, src])."""

    def start(self, enc: Encoded, beam: int) -> Any:
        """The decoder cache for ``beam`` rows per sentence (rows ordered sentence-major)."""

    def step(self, enc: Encoded, tokens: Tensor, cache: Any, edit: Edit | None = None) -> StepOutput:
        """Feed ``tokens`` [rows] (the previous step's output) and predict the next token."""

    def reorder(self, cache: Any, rows: Tensor) -> Any:
        """Keep cache rows ``rows`` [rows] (indices into the current rows), in that order.

        ``rows`` only ever permutes rows within each sentence's block of beam rows, so what is
        the same for every row of a sentence (the encoder memory) may stay where it is.
        """

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        """Teacher-forced decoding of ``tgt_in`` [batch, tgt] (start token first)."""

    def embeddings(self) -> tuple[nn.Module, nn.Module]:
        """The source and the target token-embedding modules. ``encode`` calls the source one once
        on all of ``src`` and ``forced`` the target one once on all of ``tgt_in`` (attribution
        replaces their outputs; ``pipeline.attribution``)."""

    def output_embeddings(self) -> Tensor:
        """[vocab, d] the output layer's token vectors (close words of target tokens)."""

    def logits(self, states: Tensor) -> Tensor:
        """The output layer: logits [rows, vocab] of decoder states [rows, d] (``StepOutput.state``;
        planted decoder faults replace a state and read it out here)."""

    def adjust_logprobs(
        self, logprobs: Tensor, step: int, prefix: Tensor | None = None, max_len: int | None = None
    ) -> Tensor:
        """Apply the model's own decoding rules (banned tokens, ...) to [rows, vocab].

        ``prefix`` [rows, step + 1]: each row's tokens so far, start token first (the beam search
        passes it; forced decoding does not); ``max_len``: the search's length limit (new tokens).
        """
