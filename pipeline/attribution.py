"""Gradient attribution per produced token (captum), for any model behind the adapter protocol.

For each produced token ``y_t`` of a sentence, the function attributed is its log-probability
``log p(y_t | x, y_<t)`` under teacher forcing of the sentence's own output; the inputs are the
source embeddings and the decoder input embeddings (start token and ``y_<t``). The adapter's
embedding modules (``Seq2SeqAdapter.embeddings``) get their outputs replaced by the tensors captum
varies, so built-in and Hugging Face models are attributed alike. A position's score is captum's
attribution summed over the embedding dimension.

Integrated gradients integrate from the PAD token's embedding at every position (``BASELINE``;
position encodings a model adds after the embedding stay), as captum's text tutorials do. A
step's scores sum to ``logprob - baseline_logprob + delta``, with captum's convergence ``delta``
stored beside them. (An all-zero baseline would not do for T5-like models: their first operation,
an RMS norm, maps every ``a * x`` to the same vector, so the whole change happens near ``a = 0``
and the integral misses it.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn
from tqdm import tqdm

from pipeline.batching import pad
from pipeline.models.protocol import Seq2SeqAdapter
from schemas import TABLES, ConfigError
from schemas.tables import ATTRIBUTION_METHODS

METHODS = ATTRIBUTION_METHODS
BASELINE = "the PAD token's embedding at every source and decoder input position"
DEFAULT_IG_STEPS = 32


@dataclass(frozen=True)
class Method:
    """An attribution method and its settings (``ig_steps`` counts for ``ig`` only)."""

    name: str = "ig"
    ig_steps: int = DEFAULT_IG_STEPS

    def check(self) -> Method:
        if self.name not in METHODS:
            raise ConfigError(f"unknown attribution method {self.name!r}; methods: {', '.join(METHODS)}")
        if self.name == "ig" and self.ig_steps < 1:
            raise ConfigError(f"--steps must be at least 1 (got {self.ig_steps})")
        return self

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"method": self.name}
        if self.name == "ig":
            out.update(ig_steps=self.ig_steps, baseline=BASELINE)
        return out


@dataclass(frozen=True)
class Produced:
    """One sentence to attribute: its source ids and produced ids (end of sentence included)."""

    sent_id: int
    src_ids: Sequence[int]
    out_ids: Sequence[int]


@contextlib.contextmanager
def _substituted(module: nn.Module, value: Tensor) -> Iterator[None]:
    """While inside, ``module``'s output is ``value``: all at once, or one position a call, in order
    (a model whose forced decoding embeds one step at a time: ProphetNet's)."""
    step = 0

    def hook(_m: nn.Module, _args: object, out: Tensor) -> Tensor:
        nonlocal step
        if out.shape == value.shape:
            return value.to(out.dtype)
        if out.shape[0] == value.shape[0] and out.shape[1] == 1 and step < value.shape[1]:
            step += 1
            return value[:, step - 1 : step].to(out.dtype)
        raise RuntimeError(
            f"attribution needs the embedding called on all tokens at once or one step at a time "
            f"(got {tuple(out.shape)}, expected {tuple(value.shape)})"
        )

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def logprob_of_step(model: Seq2SeqAdapter) -> Callable[..., Tensor]:
    """``f(src_emb, tgt_emb, src, mask, tgt_in, step, token)`` -> [rows]: the log-probability of
    ``token`` at decoder position ``step`` of each row, with the given embeddings in place."""
    src_module, tgt_module = model.embeddings()

    def f(
        src_emb: Tensor,
        tgt_emb: Tensor,
        src: Tensor,
        mask: Tensor,
        tgt_in: Tensor,
        step: Tensor,
        token: Tensor,
    ):
        with _substituted(src_module, src_emb):
            enc = model.encode(src, mask)
        with _substituted(tgt_module, tgt_emb):
            logits = model.forced(enc, tgt_in).logits
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, step].float().log_softmax(-1)[rows, token]

    return f


@dataclass
class _Batch:
    """Rows (sentence, step) padded to tensors; ``steps`` says which row is which."""

    rows: list[tuple[int, int]]  # (index into the items, step)
    src: Tensor
    mask: Tensor
    tgt_in: Tensor
    step: Tensor
    token: Tensor


def _batches(model: Seq2SeqAdapter, items: Sequence[Produced], max_rows: int) -> Iterator[_Batch]:
    """Every (sentence, step) row, in batches of at most ``max_rows``, sentences of similar length
    together; the decoder input of a row is cut after its step (later tokens cannot matter)."""
    order = sorted(range(len(items)), key=lambda i: (-len(items[i].src_ids), -len(items[i].out_ids), i))
    rows = [(i, t) for i in order for t in range(len(items[i].out_ids))]
    dev = model.device
    for lo in range(0, len(rows), max_rows):
        chunk = rows[lo : lo + max_rows]
        src, mask = pad([items[i].src_ids for i, _ in chunk], model.pad_id, dev)
        longest = max(t for _, t in chunk) + 1
        tgt = [[model.bos_id, *items[i].out_ids[: longest - 1]] for i, _ in chunk]
        tgt_in = torch.full((len(chunk), longest), model.pad_id, dtype=torch.long)
        for r, ids in enumerate(tgt):
            tgt_in[r, : len(ids)] = torch.as_tensor(ids[:longest])
        step = torch.tensor([t for _, t in chunk], device=dev)
        token = torch.tensor([items[i].out_ids[t] for i, t in chunk], device=dev)
        yield _Batch(chunk, src, mask, tgt_in.to(dev), step, token)


def _embed(module: nn.Module, ids: Tensor) -> Tensor:
    """The embeddings of ``ids``, as a leaf captum may take gradients for."""
    with torch.no_grad():
        return module(ids).float().requires_grad_()


def attribute(
    model: Seq2SeqAdapter,
    items: Sequence[Produced],
    method: Method,
    run_id: str = "",
    max_rows: int = 64,
    bar: tqdm | None = None,
) -> dict[str, pa.Table]:
    """The ``attribution`` and ``attribution_steps`` rows of ``items`` (``max_rows`` produced
    tokens a batch; ``bar`` counts them)."""
    method.check()
    f = logprob_of_step(model)
    src_module, tgt_module = model.embeddings()
    cols: dict[str, dict[str, list[np.ndarray]]] = {"attribution": {}, "attribution_steps": {}}
    for b in _batches(model, items, max_rows):
        inputs = (_embed(src_module, b.src), _embed(tgt_module, b.tgt_in))
        baselines = (
            (_embed(src_module, _pads(b.src, model)), _embed(tgt_module, _pads(b.tgt_in, model)))
            if method.name == "ig"
            else None
        )
        extra = (b.src, b.mask, b.tgt_in, b.step, b.token)
        with torch.enable_grad():
            attr, delta = _run(method, f, inputs, baselines, extra)
        with torch.no_grad():
            logprob = f(*inputs, *extra)
            base = f(*baselines, *extra) if baselines is not None else None
        src_scores = attr[0].sum(-1).masked_fill(~b.mask, 0.0).detach().cpu().numpy()
        tgt_scores = attr[1].sum(-1).detach().cpu().numpy()
        _add_rows(cols, items, b, src_scores, tgt_scores)
        n = len(b.rows)
        _add(
            cols["attribution_steps"],
            sent_id=np.array([items[i].sent_id for i, _ in b.rows], dtype=np.int64),
            step=b.step.cpu().numpy().astype(np.int32),
            method=np.array([method.name] * n, dtype=object),
            ig_steps=np.array([method.ig_steps if method.name == "ig" else None] * n, dtype=object),
            logprob=logprob.cpu().numpy().astype(np.float32),
            baseline_logprob=_maybe(base, n),
            delta=_maybe(delta, n),
        )
        if bar is not None:
            bar.update(n)
    return {name: _table(name, c, run_id) for name, c in cols.items()}


def _pads(ids: Tensor, model: Seq2SeqAdapter) -> Tensor:
    return torch.full_like(ids, model.pad_id)


def _run(
    method: Method,
    f: Callable[..., Tensor],
    inputs: tuple[Tensor, Tensor],
    baselines: tuple[Tensor, Tensor] | None,
    extra: tuple[Tensor, ...],
) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
    """captum's attributions for ``inputs`` (and the convergence delta of integrated gradients)."""
    if method.name == "ig":
        attr, delta = IntegratedGradients(f).attribute(
            inputs,
            baselines=baselines,
            additional_forward_args=extra,
            n_steps=method.ig_steps,
            internal_batch_size=max(len(inputs[0]), 1) * min(method.ig_steps, 8),
            return_convergence_delta=True,
        )
        return attr, delta
    if method.name == "grad_x_input":
        return InputXGradient(f).attribute(inputs, additional_forward_args=extra), None
    return Saliency(f).attribute(inputs, additional_forward_args=extra, abs=True), None


def _add_rows(
    cols: dict[str, dict[str, list[np.ndarray]]],
    items: Sequence[Produced],
    b: _Batch,
    src_scores: np.ndarray,
    tgt_scores: np.ndarray,
) -> None:
    """One ``attribution`` row per real source position and per decoder input position <= step."""
    for r, (i, t) in enumerate(b.rows):
        n_src = len(items[i].src_ids)
        for side, scores in (("src", src_scores[r, :n_src]), ("tgt", tgt_scores[r, : t + 1])):
            _add(
                cols["attribution"],
                sent_id=np.full(len(scores), items[i].sent_id, dtype=np.int64),
                step=np.full(len(scores), t, dtype=np.int32),
                side=np.array([side] * len(scores), dtype=object),
                position=np.arange(len(scores), dtype=np.int32),
                score=scores.astype(np.float32),
            )


def _add(table: dict[str, list[np.ndarray]], **columns: np.ndarray) -> None:
    for name, values in columns.items():
        table.setdefault(name, []).append(values)


def _maybe(x: Tensor | None, n: int) -> np.ndarray:
    if x is None:
        return np.array([None] * n, dtype=object)
    return x.detach().float().cpu().numpy().astype(np.float32)


def _table(name: str, cols: dict[str, list[np.ndarray]], run_id: str) -> pa.Table:
    """Rows sorted by key, as the other part tables are (``sent_id``, then step, side, position)."""
    schema = TABLES[name]
    if not cols:
        return schema.empty_table()
    arrays = {
        f.name: pa.array(np.concatenate(cols[f.name]), type=f.type) for f in schema if f.name != "run_id"
    }
    n = len(arrays["sent_id"])
    table = pa.table({"run_id": pa.array([run_id] * n, pa.string()), **arrays}, schema=schema)
    keys = [("sent_id", "ascending"), ("step", "ascending")]
    if name == "attribution":
        keys += [("side", "ascending"), ("position", "ascending")]
    return table.sort_by(keys)
