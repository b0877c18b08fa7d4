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
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch
import transformers
from torch import nn

from pipeline.models.protocol import Edit
from schemas import ConfigError

IMPLEMENTATION = "eager"
CROSS_ATTENTION = ("encoder_attn", "EncDecAttention")  # the decoder's cross-attention module names
_active = threading.local()  # .edit: the edit applied by the forward pass running in this thread


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The family's eager attention, with the active edit in cross-attention."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = eager(module, query, key, value, *args, **kwargs)
    edit = getattr(_active, "edit", None)
    if edit is None or not getattr(module, "_beamscope_cross", False):
        return out, weights
    weights = edit.apply(weights)  # [rows, heads, tgt, src]
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def enable(model: Any) -> None:
    """Route eager attention through ``_attention`` and mark ``model``'s cross-attention modules
    (a model without them, or not eager, cannot take edits: ``check`` says so)."""
    transformers.AttentionInterface.register(IMPLEMENTATION, _attention)
    for name, module in model.named_modules():
        if name.split(".")[-1] in CROSS_ATTENTION:
            module._beamscope_cross = True


def check(model: Any) -> None:
    """A ConfigError unless edits reach ``model``'s cross-attention."""
    modules = [m for m in model.modules() if getattr(m, "_beamscope_cross", False)]
    if not modules or model.config._attn_implementation != IMPLEMENTATION:
        raise ConfigError(
            f"attention edits do not reach the cross-attention of model_type {model.config.model_type!r}"
        )


@contextlib.contextmanager
def editing(edit: Edit | None) -> Iterator[None]:
    """Apply ``edit`` in the forward passes of this thread until the block ends."""
    _active.edit = edit
    try:
        yield
    finally:
        _active.edit = None
