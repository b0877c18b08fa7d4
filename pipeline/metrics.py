"""Sentence metrics: sacrebleu's BLEU, chrF and TER, exact match, divergence, search errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER

_BLEU = BLEU(effective_order=True)
_CHRF = CHRF()
_TER = TER()


@dataclass(frozen=True)
class SentenceScores:
    bleu: float
    chrf: float
    ter: float


def sentence_scores(hypothesis: str, reference: str) -> SentenceScores:
    """sacrebleu's sentence-level BLEU, chrF and TER of one hypothesis."""
    return SentenceScores(
        _BLEU.sentence_score(hypothesis, [reference]).score,
        _CHRF.sentence_score(hypothesis, [reference]).score,
        _TER.sentence_score(hypothesis, [reference]).score,
    )


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU, chrF and TER and the exact-match rate."""
    if not references:
        return {"exact_match": None, "bleu": None, "chrf": None, "ter": None}
    refs = [list(references)]
    return {
        "exact_match": sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references),
        "bleu": BLEU().corpus_score(hypotheses, refs).score,
        "chrf": CHRF().corpus_score(hypotheses, refs).score,
        "ter": TER().corpus_score(hypotheses, refs).score,
    }


def first_divergence(hyp: Sequence[int], ref: Sequence[int]) -> int | None:
    """First step where the sequences (end-of-sentence included) differ; None if equal."""
    for t, (h, r) in enumerate(zip(hyp, ref, strict=False)):
        if h != r:
            return t
    return None if len(hyp) == len(ref) else min(len(hyp), len(ref))


def is_search_error(exact: bool, hyp_score: float, ref_score: float) -> bool:
    """Wrong, yet the model scores the reference above its own output (same normalisation)."""
    return not exact and ref_score > hyp_score
