"""Planted faults of known stage: the blame benchmark's ground truth (``beamscope calibrate``).

A ``Fault`` breaks one sentence's decoding at one target step t in one stage, and nothing else:

- ``encoder``: the encoder state of source position ``position`` (the token most attended at t)
  is replaced by the state of position ``donor`` (another token of the sentence);
- ``attention``: at step t the attention peak of every layer and head moves to source position
  ``position`` (its weight trades places with the peak's, so the row keeps its shape);
- ``decoder``: the decoder state at t is replaced by ``state`` (the model's own state at another
  step of the sentence) before the output layer reads it;
- ``prediction``: at t the logit of ``token`` is set ``MARGIN`` below that of ``rival``; states and
  attention are untouched;
- ``search`` is planted without a model fault: a beam too narrow (``SEARCH_BEAM``) to keep the
  output the model scores higher (``pipeline.fault_runs``).

``FaultyModel`` wraps a model so that both decodings of a faulted sentence (the beam search and
the reference's forced decoding, which is run step by step through the same ``step``) go through
its fault: the trace records the faulted states, attention and distributions, and the ordinary
blame runs on them. ``plan_faults`` chooses the faults from the clean model's own outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.batching import pad
from pipeline.models.protocol import (
    Edit,
    Encoded,
    ForcedOutput,
    RowAttentionEdit,
    Seq2SeqAdapter,
    StepOutput,
)
from pipeline.stepstats import mean_attention
from schemas import ConfigError
from schemas.stages import Stage

MARGIN = 1.0  # a prediction fault puts the token this far (in logits) below its rival
SEARCH_BEAM = 1  # a search fault decodes greedily where the run's beam finds a better output
MODEL_STAGES = (Stage.ENCODER, Stage.DECODER, Stage.ATTENTION, Stage.PREDICTION)


@dataclass(frozen=True)
class Fault:
    """One planted fault of ``stage`` at target step ``step`` (fields per stage: module doc)."""

    stage: Stage
    step: int
    position: int | None = None
    donor: int | None = None
    token: int | None = None
    rival: int | None = None
    state: tuple[float, ...] | None = None

    def check(self, n_src: int, n_steps: int, model: Seq2SeqAdapter) -> Fault:
        """This fault, or a ConfigError saying why it cannot apply to a sentence of ``n_src``
        source tokens whose output has ``n_steps`` steps."""
        if self.stage not in MODEL_STAGES:
            known = ", ".join(MODEL_STAGES)
            raise ConfigError(
                f"unknown fault stage {str(self.stage)!r}; model faults: {known} (search: by the beam width)"
            )
        if not 0 <= self.step < n_steps:
            raise ConfigError(f"fault step {self.step} is beyond the sentence (steps 0..{n_steps - 1})")
        needs = {
            Stage.ENCODER: ("position", "donor"),
            Stage.ATTENTION: ("position",),
            Stage.DECODER: ("state",),
            Stage.PREDICTION: ("token", "rival"),
        }[self.stage]
        for name in needs:
            if getattr(self, name) is None:
                raise ConfigError(f"a {self.stage} fault needs its {name}")
        for name in ("position", "donor"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < n_src:
                raise ConfigError(f"fault {name} {value} is not a source position (0..{n_src - 1})")
        for name in ("token", "rival"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < model.vocab_size:
                raise ConfigError(f"fault {name} {value} is not a target token id")
        return self

    def describe(self) -> dict[str, Any]:
        """A JSON-able record (the replacement state by its width only)."""
        fields = dataclasses.asdict(self)
        state = fields.pop("state")
        fields = {k: v for k, v in fields.items() if v is not None}
        return {**fields, "stage": str(self.stage)} | ({"state_dim": len(state)} if state else {})


@dataclass
class _Encoded(Encoded):
    faults: tuple[Fault | None, ...] = ()  # per sentence of the batch


@dataclass
class _Cache:
    inner: Any
    step: int


class FaultyModel:
    """``model`` with ``faults`` planted, each in the sentence with its source ids; everything but
    the decoding is the model's own (name, hash, vocabularies...), so the run is traced and checked
    as the model's. Sentences of a batch carry their own faults (a row edit per sentence)."""

    def __init__(self, model: Seq2SeqAdapter, faults: Mapping[tuple[int, ...], Fault]) -> None:
        self.model, self.faults = model, dict(faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        faults = tuple(self.faults.get(tuple(row[m].tolist())) for row, m in zip(src, mask, strict=True))
        enc = self.model.encode(src, mask, all_layers)
        swaps = [(i, f) for i, f in enumerate(faults) if f is not None and f.stage == Stage.ENCODER]
        if swaps:
            states = enc.states.clone()
            for i, f in swaps:
                states[i, f.position] = enc.states[i, f.donor]
            enc.states = states
            if enc.layer_states is not None:  # the last layer is the encoder's output
                layers = enc.layer_states.clone()
                layers[:, -1] = states
                enc.layer_states = layers
        return _Encoded(**vars(enc), faults=faults)

    def start(self, enc: Encoded, beam: int) -> _Cache:
        return _Cache(self.model.start(enc, beam), 0)

    def step(self, enc: Encoded, tokens: Tensor, cache: _Cache, edit: Edit | None = None) -> StepOutput:
        per_sentence = tokens.shape[0] // len(enc.faults)  # rows are sentence-major
        now = [f if f is not None and f.step == cache.step else None for f in enc.faults]
        by_row = [f for f in now for _ in range(per_sentence)]
        rows = lambda stage: [(r, f) for r, f in enumerate(by_row) if f and f.stage == stage]  # noqa: E731
        if attention := rows(Stage.ATTENTION):
            if edit is not None:
                raise ConfigError("a faulted model takes no what-if attention edit")
            positions = [-1] * tokens.shape[0]
            for r, f in attention:
                positions[r] = f.position
            edit = RowAttentionEdit(cache.step, tuple(positions))
        out = self.model.step(enc, tokens, cache.inner, edit)
        logits, state = out.logits, out.state
        if decoder := rows(Stage.DECODER):
            at = [r for r, _ in decoder]
            state, logits = state.clone(), logits.clone()
            state[at] = torch.tensor([f.state for _, f in decoder], dtype=state.dtype, device=state.device)
            logits[at] = self.model.logits(state[at])
        if prediction := rows(Stage.PREDICTION):
            logits = logits.clone()
            for r, f in prediction:
                logits[r, f.token] = logits[r, f.rival] - MARGIN
        return StepOutput(logits, out.cross_attention, state, _Cache(out.cache, cache.step + 1))

    def reorder(self, cache: _Cache, rows: Tensor) -> _Cache:
        return _Cache(self.model.reorder(cache.inner, rows), cache.step)

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        """Teacher forcing step by step, so each fault acts at its step as in the beam search."""
        cache, outs = self.start(enc, 1), []
        for t in range(tgt_in.shape[1]):
            out = self.step(enc, tgt_in[:, t], cache)
            cache = out.cache
            outs.append(out)
        return ForcedOutput(
            torch.stack([o.logits for o in outs], 1),
            torch.stack([o.cross_attention for o in outs], 1),
            torch.stack([o.state for o in outs], 1),
        )


@dataclass(frozen=True)
class Clean:
    """One sentence as the clean model decoded it: the faults' reference."""

    sent_id: int
    src_ids: list[int]
    out_ids: list[int]  # the clean output, end-of-sentence included when it ended


@dataclass(frozen=True)
class _View:
    """The clean model's forced decoding of its own output (what the planner reads)."""

    argmax: np.ndarray  # [steps] the source position attended most (mean over layers and heads)
    rival: np.ndarray  # [steps] the best token other than the output's
    states: np.ndarray  # [steps, d]


@torch.inference_mode()
def _views(model: Seq2SeqAdapter, clean: Sequence[Clean]) -> list[_View]:
    src, mask = pad([c.src_ids for c in clean], model.pad_id, model.device)
    tgt_in, _ = pad([[model.bos_id, *c.out_ids[:-1]] if c.out_ids else [model.bos_id] for c in clean],
                    model.pad_id, model.device)  # fmt: skip
    out = model.forced(model.encode(src, mask), tgt_in)
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)
    attn = mean_attention(out.cross_attention)
    views = []
    for i, c in enumerate(clean):
        n = len(c.out_ids)
        lp = logprobs[i, :n].clone()
        lp[torch.arange(n), torch.tensor(c.out_ids)] = float("-inf")
        for t in range(n):
            lp[t] = model.adjust_logprobs(lp[t : t + 1], t)[0]
        views.append(
            _View(
                attn[i, :n, : len(c.src_ids)].argmax(-1).cpu().numpy(),
                lp.argmax(-1).cpu().numpy(),
                out.states[i, :n].float().cpu().numpy(),
            )
        )
    return views


def plan_faults(
    model: Seq2SeqAdapter, clean: Sequence[Clean], stage: Stage, seed: int = 0, batch: int = 64
) -> dict[int, Fault]:
    """One fault of ``stage`` per sentence of ``clean`` where one can be planted (sent_id -> fault):
    at a random step t of its output, with the choices of the module doc drawn at random."""
    check_takes(model, stage)
    rng = np.random.default_rng([seed, list(MODEL_STAGES).index(stage)])
    faults: dict[int, Fault] = {}
    for start in range(0, len(clean), batch):
        chunk = [c for c in clean[start : start + batch] if c.out_ids]
        for c, view in zip(chunk, _views(model, chunk), strict=True):
            fault = _draw(stage, c, view, rng)
            if fault is not None:
                faults[c.sent_id] = fault.check(len(c.src_ids), len(c.out_ids), model)
    return faults


@torch.inference_mode()
def check_takes(model: Seq2SeqAdapter, stage: Stage) -> None:
    """A ConfigError unless ``model`` can take faults of ``stage`` (one decoder step, probed)."""
    src, mask = pad([[model.eos_id]], model.pad_id, model.device)
    enc = model.encode(src, mask)
    cache, tokens = model.start(enc, 1), torch.tensor([model.bos_id], device=model.device)
    try:
        if stage == Stage.ATTENTION:
            model.step(enc, tokens, cache, RowAttentionEdit(0, (0,)))
        elif stage == Stage.DECODER:
            model.logits(model.step(enc, tokens, cache).state)
    except ConfigError as e:
        raise ConfigError(f"model {model.name} cannot take {stage} faults: {e}") from None


def _draw(stage: Stage, c: Clean, view: _View, rng: np.random.Generator) -> Fault | None:
    t = int(rng.integers(len(c.out_ids)))
    focus = int(view.argmax[t])
    src = np.asarray(c.src_ids)
    if stage == Stage.PREDICTION:
        return Fault(stage, t, token=c.out_ids[t], rival=int(view.rival[t]))
    if stage == Stage.DECODER:
        others = [s for s in range(len(c.out_ids)) if c.out_ids[s] != c.out_ids[t]]
        donor = _pick(rng, others)
        return None if donor is None else Fault(stage, t, state=tuple(view.states[donor].tolist()))
    other_tokens = np.flatnonzero(src != src[focus]).tolist()  # another token's position
    pick = _pick(rng, other_tokens)
    if pick is None:
        return None
    if stage == Stage.ENCODER:
        return Fault(stage, t, position=focus, donor=pick)
    return Fault(stage, t, position=pick)


def _pick(rng: np.random.Generator, options: list[int]) -> int | None:
    return None if not options else int(options[int(rng.integers(len(options)))])
