"""The error taxonomy (v1): which stage to blame for a wrong sentence, and which tags it gets.

For a sentence with a reference whose hypothesis differs from it:

1. ``search`` - the model scores the reference above its own hypothesis under the same length
   normalisation: the model was right, the beam lost the reference.
2. Otherwise a model error, located at the first divergence step t* (hypothesis and reference
   share the prefix before t*, so at t* both decodings saw the same states), blamed on the
   earliest stage of the pipeline that explains it:

   - ``encoder``: a source token has an encoder state whose nearest training encoder states are
     mostly *other* tokens (its agreement < ``encoder_agreement``). Any source token, not only the
     one attended most at t*: planted encoder faults showed that attention moves away from a
     broken state (it no longer looks like the token attention is after), so the most attended
     token was the broken one in 1-10% of them (``beamscope calibrate``);
   - ``decoder``: the decoder state at t* has nearest training decoder states that are mostly
     followed by the produced (wrong) token (agreement >= ``decoder_agreement``), and they did
     not read what it reads: fewer than ``attention_agreement`` of them attended most the source
     token t* attends most;
   - ``attention``: the same neighbours (followed by the wrong token) did read that source token
     (the state did what the token it attended asks: attention chose the wrong token; planted
     attention faults had been blamed on the decoder before this rule), or attention at t* is
     diffuse (entropy / log(source length) >= ``attn_entropy``) or returns to a source token
     already covered before t* (total weight >= ``coverage`` over the earlier steps);
   - ``prediction``: none of the above; tagged ``ref_in_topk`` when the reference token is among
     the top-k at t*, else ``ref_outside_topk``.

   The neighbour rules need a traced training run of the same model (``trace`` finds one in
   the warehouse); without one they do not fire and the run records ``neighbours_run = null``.

Tags (wrong sentences only): ``under_translation`` (a source token the reference's forced
decoding attends with total weight >= ``coverage`` receives < ``coverage`` from the
hypothesis), ``over_translation`` (a bigram repeated more often than in the reference, or a
source token attended most at more steps than in the reference), ``too_short``/``too_long``
(length off by more than ``length_ratio``), ``truncated`` (no end-of-sentence within max_len),
``unknown_tokens`` (unknown source tokens or an unknown token produced), and the attention rule
that fired (``diffuse_attention``, ``covered_attention``).

The stage rule reads five numbers per sentence (``Signals``, stored in its ``sentences`` row), so
``blame`` re-applies it with other thresholds without re-tracing (``beamscope calibrate`` chooses
them on planted faults of known stage).

(A first draft blamed attention on "a source token the reference never attends most"; in
monotone tasks every token is attended most exactly once, so that rule fired on every error.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from schemas.stages import Stage, Tag


@dataclass(frozen=True)
class Taxonomy:
    """Thresholds of the rules (recorded in ``runs.options['taxonomy']``)."""

    attn_entropy: float = 0.75
    coverage: float = 0.3
    encoder_agreement: float = 0.5
    decoder_agreement: float = 0.5
    attention_agreement: float = 0.3
    neighbours: int = 10
    length_ratio: float = 0.2

    @classmethod
    def from_options(cls, recorded: Mapping[str, Any]) -> Taxonomy:
        """The thresholds a run recorded; before the two agreement thresholds were separate runs
        recorded one ``agreement`` for both."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in recorded.items() if k in known}
        if "agreement" in recorded:
            both = recorded["agreement"]
            values = {"encoder_agreement": both, "decoder_agreement": both} | values
        return cls(**values)


@dataclass(frozen=True)
class Signals:
    """What the stage rule reads at a wrong sentence's first divergence step t* (NaN: not known,
    the rule does not fire). Fields are floats or, to blame many sentences at once, arrays."""

    search_error: Any  # the model scores the reference above its hypothesis
    encoder_agreement: Any  # the lowest of the source tokens' states (``nn_encoder_min_agreement``)
    decoder_agreement: Any  # of the decoder state, with the produced token
    attention_agreement: Any  # of the decoder state, with the source token attended most
    attention_entropy: Any  # of the reference decoding's attention, / log(source length)
    attention_coverage: Any  # weight the reference's earlier steps gave its most attended token


def blame(sig: Signals, tax: Taxonomy) -> Any:
    """The blamed stage: of one sentence (a ``Stage``) or, given arrays, of each (an array)."""
    attention = (np.asarray(sig.attention_entropy) >= tax.attn_entropy) | (
        np.asarray(sig.attention_coverage) >= tax.coverage
    )
    decoder = np.asarray(sig.decoder_agreement) >= tax.decoder_agreement
    read = np.asarray(sig.attention_agreement) >= tax.attention_agreement  # what its neighbours read
    stage = np.select(
        [
            np.asarray(sig.search_error, dtype=bool),
            np.asarray(sig.encoder_agreement) < tax.encoder_agreement,
            decoder & ~read,
            decoder | attention,
        ],
        [Stage.SEARCH, Stage.ENCODER, Stage.DECODER, Stage.ATTENTION],
        Stage.PREDICTION,
    )
    return Stage(str(stage)) if stage.ndim == 0 else stage


@dataclass(frozen=True)
class Evidence:
    """What the rules look at, for one wrong sentence with a reference."""

    search_error: bool
    diverge: int  # first divergence step t*
    hyp_ids: Sequence[int]  # end-of-sentence included when the hypothesis ended
    ref_ids: Sequence[int]  # end-of-sentence included
    ended: bool
    topk_at: Sequence[int]  # top-k ids at t* (empty when the hypothesis ended before t*)
    hyp_attention: np.ndarray  # [hyp steps, src] mean attention
    ref_attention: np.ndarray  # [ref steps, src]
    has_unknown: bool
    encoder_agreement: float | None = None  # share of neighbours of the attended token's state
    encoder_min_agreement: float | None = None  # the lowest of any source token's state
    attention_agreement: float | None = None  # share of the decoder state's neighbours that attended
    # most the source token t* attends most
    decoder_agreement: float | None = None  # share of neighbours followed by the produced token


@dataclass(frozen=True)
class Verdict:
    stage: Stage
    tags: tuple[Tag, ...]
    signals: Signals


def _norm_entropy(w: np.ndarray) -> float:
    if len(w) < 2:
        return 0.0
    p = w[w > 0]
    return float(-(p * np.log(p)).sum() / math.log(len(w)))


def attention_signals(ev: Evidence) -> tuple[float, float]:
    """Normalised entropy of the attention at t* and the weight earlier steps gave the token it
    attends most (NaN, NaN when there is no step to read)."""
    t = min(ev.diverge, len(ev.hyp_attention) - 1, len(ev.ref_attention) - 1)
    if t < 0:
        return math.nan, math.nan
    row = ev.ref_attention[t]  # same prefix up to t*: the reference decoding saw the same state
    return _norm_entropy(row), float(ev.ref_attention[:t, int(row.argmax())].sum())


def _attention_tags(entropy: float, coverage: float, tax: Taxonomy) -> list[Tag]:
    tags = []
    if entropy >= tax.attn_entropy:
        tags.append(Tag.DIFFUSE_ATTENTION)
    if coverage >= tax.coverage:
        tags.append(Tag.COVERED_ATTENTION)
    return tags


def _coverage_tags(ev: Evidence, tax: Taxonomy) -> list[Tag]:
    tags = []
    hyp_cov, ref_cov = ev.hyp_attention.sum(0), ev.ref_attention.sum(0)
    if ((ref_cov >= tax.coverage) & (hyp_cov < tax.coverage)).any():
        tags.append(Tag.UNDER_TRANSLATION)
    bigrams = lambda ids: Counter(zip(ids, ids[1:], strict=False))  # noqa: E731
    hyp_bi, ref_bi = bigrams(list(ev.hyp_ids)), bigrams(list(ev.ref_ids))
    repeated = any(n >= 2 and n > ref_bi.get(g, 0) for g, n in hyp_bi.items())
    hyp_focus = Counter(ev.hyp_attention.argmax(-1).tolist())
    ref_focus = Counter(ev.ref_attention.argmax(-1).tolist())
    returns = any(n >= 2 and n > ref_focus.get(pos, 0) for pos, n in hyp_focus.items())
    if repeated or returns:
        tags.append(Tag.OVER_TRANSLATION)
    return tags


def _length_tags(ev: Evidence, tax: Taxonomy) -> list[Tag]:
    tags = []
    ref_len, hyp_len = len(ev.ref_ids), len(ev.hyp_ids)
    if hyp_len < (1 - tax.length_ratio) * ref_len:
        tags.append(Tag.TOO_SHORT)
    elif hyp_len > (1 + tax.length_ratio) * ref_len:
        tags.append(Tag.TOO_LONG)
    if not ev.ended:
        tags.append(Tag.TRUNCATED)
    return tags


def classify(ev: Evidence, tax: Taxonomy, unk_id: int | None) -> Verdict:
    """Blame a stage and collect the tags of one wrong sentence."""
    entropy, coverage = attention_signals(ev)
    tags = [*_attention_tags(entropy, coverage, tax), *_coverage_tags(ev, tax), *_length_tags(ev, tax)]
    if ev.has_unknown or (unk_id is not None and unk_id in ev.hyp_ids):
        tags.append(Tag.UNKNOWN_TOKENS)
    ref_token = ev.ref_ids[ev.diverge] if ev.diverge < len(ev.ref_ids) else None
    tags.append(
        Tag.REF_IN_TOPK if ref_token is not None and ref_token in ev.topk_at else Tag.REF_OUTSIDE_TOPK
    )
    known = lambda x: math.nan if x is None else x  # noqa: E731
    signals = Signals(
        ev.search_error,
        known(ev.encoder_min_agreement),
        known(ev.decoder_agreement),
        known(ev.attention_agreement),
        entropy,
        coverage,
    )
    return Verdict(blame(signals, tax), tuple(tags), signals)
