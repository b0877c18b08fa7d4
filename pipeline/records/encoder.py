"""Encoder stage records: the source tokens' own columns and the encoder states (vectors)."""

from __future__ import annotations

import numpy as np

from pipeline.models.protocol import Seq2SeqAdapter


def source_token_columns(
    model: Seq2SeqAdapter, src_ids: list[int], tokens: list[str]
) -> dict[str, np.ndarray]:
    """``source_tokens`` columns of the encoder: the tokens, unknown ones and word starts."""
    ids = np.asarray(src_ids)
    return dict(
        src_pos=np.arange(len(ids)),
        token=np.array(tokens, dtype=object),
        token_id=ids,
        is_unknown=ids == getattr(model, "unk_id", -1),
        is_word_start=np.asarray(model.word_starts(tokens, "src"), dtype=bool),
    )


def encoder_state_rows(
    tokens: list[str], states: np.ndarray, layers: np.ndarray | None, split: str
) -> dict[str, np.ndarray]:
    """``encoder_states`` rows: the last layer's states [src, d], or every layer's [layers, src, d]."""
    block = layers if layers is not None else states[None]
    n_layers, n_src, _ = block.shape
    first = n_layers - 1 if layers is None else 0
    layer, pos = (a.ravel() for a in np.indices((n_layers, n_src)))
    return dict(
        src_pos=pos,
        layer=layer + first,
        token=np.array(tokens, dtype=object)[pos],
        split=np.full(layer.size, split, dtype=object),
        vector=block.reshape(-1, block.shape[-1]),
    )
