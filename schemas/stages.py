"""The names the error taxonomy gives: the five stages a seq2seq model decides in, and the tags of
a wrong sentence. Defined once here; the blame rules (``pipeline.taxonomy``), the marts and the
dashboard's filters all use these."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """What a wrong sentence can be blamed on, in the order the blame rules try them."""

    SEARCH = "search"
    ENCODER = "encoder"
    DECODER = "decoder"
    ATTENTION = "attention"
    PREDICTION = "prediction"


class Tag(StrEnum):
    """What else is wrong with a wrong sentence (``pipeline.taxonomy`` says when each is given)."""

    UNDER_TRANSLATION = "under_translation"
    OVER_TRANSLATION = "over_translation"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TRUNCATED = "truncated"
    UNKNOWN_TOKENS = "unknown_tokens"
    DIFFUSE_ATTENTION = "diffuse_attention"
    COVERED_ATTENTION = "covered_attention"
    REF_IN_TOPK = "ref_in_topk"
    REF_OUTSIDE_TOPK = "ref_outside_topk"


STAGES = tuple(s.value for s in Stage)
TAGS = tuple(t.value for t in Tag)
# a sentence's stage: correct, one of STAGES, or no_reference (nothing to compare with)
SENTENCE_STAGES = ("correct", *STAGES, "no_reference")

# the same in SQL over a ``sentences`` row
STAGE_SQL = (
    "CASE WHEN reference IS NULL THEN 'no_reference' WHEN exact_match THEN 'correct' ELSE blamed_stage END"
)
