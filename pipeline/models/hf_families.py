"""What each Hugging Face family does its own way, in one place: which families the adapter takes
(and why some are refused), which outputs hold the prediction's attention and state (ProphetNet's
n-gram stream), where the token embeddings are, how the vocabulary marks words."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

FAMILIES = (  # config.json "model_type" values this adapter is tested with
    "marian",
    "t5",
    "mt5",
    "umt5",
    "bart",
    "mbart",
    "m2m_100",  # M2M100 and NLLB-200
    "pegasus",
    "pegasus_x",
    "bigbird_pegasus",
    "led",
    "longt5",
    "fsmt",
    "prophetnet",
)
REFUSED = {  # model_type -> why it cannot be traced exactly
    "switch_transformers": "its decoder reads the encoder's router logits, which a reused encoder "
    "output does not carry",
}
STEPWISE_FORCED = ("hf-prophetnet",)  # a full teacher-forced pass differs from its generation: n-gram
# streams see the main stream differently; forced decoding runs step by step as generate does
FULL_PASS_INPUT_IDS = ("hf-fsmt",)  # builds its decoder's causal mask in a full pass only when given
# input_ids (with the encoder output given, it reads nothing else from them)
WORD_MARKS = ("▁", "Ġ")  # sentence-piece and byte-level BPE word-start marks
ENDS_WORD, CONTINUES = "</w>", "##"  # FSMT's (XLM) BPE word-end mark, ProphetNet's word-piece one


def input_embeddings(side: nn.Module) -> nn.Module:
    """A side's token embeddings (ProphetNet calls them ``word_embeddings``; FSMT's sides are plain
    modules without ``get_input_embeddings``)."""
    return side.embed_tokens if hasattr(side, "embed_tokens") else side.get_input_embeddings()


def output_layer(model: Any) -> nn.Module:
    """The layer that turns decoder states into logits (FSMT's ``output_projection`` is not its
    output embeddings)."""
    head = getattr(model.get_decoder(), "output_projection", None)
    return model.get_output_embeddings() if head is None else head


def predicting(out: Any, steps: int) -> tuple[Tensor, Tensor]:
    """The cross-attention [b, steps, layers, heads, src] and decoder states [b, steps, d] that the
    prediction of each next token read. ProphetNet predicts from its first n-gram stream (its
    outputs hold the main stream's rows first) and returns attention scores before the softmax."""
    ngram = getattr(out, "decoder_ngram_hidden_states", None)
    rows = slice(steps, 2 * steps) if ngram is not None else slice(0, steps)
    # cross_attentions: per layer [b, heads, streams * steps, src] -> [b, steps, layers, heads, src]
    attention = torch.stack([a[:, :, rows] for a in out.cross_attentions], dim=1).permute(0, 3, 1, 2, 4)
    if ngram is not None:
        return attention.softmax(-1), ngram[-1][:, :steps]
    return attention, out.decoder_hidden_states[-1]


def word_marks(tokenizer: Any) -> str:
    """How the vocabulary marks words: "end" (``</w>``), "continue" (``##``) or "start" (``▁``/``Ġ``)."""
    vocab = tokenizer.get_vocab()
    if any(piece.endswith(ENDS_WORD) for piece in vocab):
        return "end"
    return "continue" if any(piece.startswith(CONTINUES) for piece in vocab) else "start"


def word_starts(pieces: list[str], special: set[str], marks: str) -> list[bool]:
    """Whether each piece begins a word: it is special or follows one, or the vocabulary's
    ``marks`` (``word_marks``) say so."""
    starts, after_special, ended = [], True, True  # ended: the previous piece ended a word
    for piece in pieces:
        if marks == "end":
            marked = ended
        elif marks == "continue":
            marked = not piece.startswith(CONTINUES)
        else:
            marked = piece.startswith(WORD_MARKS)
        is_special = piece in special
        starts.append(is_special or after_special or marked)
        after_special, ended = is_special, is_special or piece.endswith(ENDS_WORD)
    return starts
