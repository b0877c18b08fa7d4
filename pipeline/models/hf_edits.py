"""Attention edits (what-if, planted attention faults) on Hugging Face models.

Every family the adapter takes computes attention through transformers' ``AttentionInterface``
with its own eager function (the adapter loads models with ``attn_implementation="eager"``).
``enable`` registers ``_attention`` as the interface's "eager" entry: it calls the family's own
eager function and then, while an edit is active (``editing``) and only in the decoder's
cross-attention modules it marked, applies the edit to the weights and recomputes the output from
them (``weights @ value``, as eager attention does; no dropout in eval). The implementation keeps
its name, so masks and every other code path stay the eager ones (a new name gets no mask at
all), and without an active edit the outputs are the family's own, bit for bit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import transformers
from torch import nn

from pipeline.models.hf_compat import eager_attention
from pipeline.models.protocol import Edit

IMPLEMENTATION = "eager"
CROSS_ATTENTION = ("encoder_attn", "EncDecAttention")  # the decoder's cross-attention module names
_active = threading.local()  # .edit: the edit applied by the forward pass running in this thread


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The family's eager attention, with the active edit in cross-attention."""
    out, weights = eager_attention(module)(module, query, key, value, *args, **kwargs)
    edit = getattr(_active, "edit", None)
    layer = getattr(module, "_beamscope_cross", None)
    if edit is None or layer is None or edit.at_layer(layer) is None:
        return out, weights
    weights = edit.apply(weights)  # [rows, heads, tgt, src]
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def enable(model: Any) -> None:
    """Route eager attention through ``_attention`` and mark ``model``'s cross-attention modules
    (``reaches`` tells whether edits then reach them)."""
    transformers.AttentionInterface.register(IMPLEMENTATION, _attention)
    cross = [m for name, m in model.named_modules() if name.split(".")[-1] in CROSS_ATTENTION]
    for layer, module in enumerate(cross):  # in the decoder's layer order
        module._beamscope_cross = layer


def reaches(model: Any, forward: Callable[[], torch.Tensor | None]) -> bool:
    """Whether an edit reaches ``model``'s cross-attention: ``forward()`` (one decoder step over a
    source of several tokens) is run under an edit that moves every row to the last source
    position, and every layer's and head's weights must show it. A family whose attention
    bypasses the interface fails this."""
    if not any(getattr(m, "_beamscope_cross", None) is not None for m in model.modules()):
        return False
    with editing(_Probe()):
        weights = forward()  # None: the model returns no attention weights
    return weights is not None and bool(torch.allclose(weights[..., -1], torch.ones_like(weights[..., -1])))


class _Probe:
    """An edit that sends every row to the last source position."""

    def at_layer(self, layer: int) -> _Probe:
        return self

    def apply(self, weights: torch.Tensor) -> torch.Tensor:
        edited = torch.zeros_like(weights)
        edited[..., -1] = 1.0
        return edited


@contextlib.contextmanager
def editing(edit: Edit | None) -> Iterator[None]:
    """Apply ``edit`` in the forward passes of this thread until the block ends."""
    _active.edit = edit
    try:
        yield
    finally:
        _active.edit = None
