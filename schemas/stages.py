"""The names of the five stages a seq2seq model decides in, defined once (blame, marts, filters)."""

from __future__ import annotations

# what a wrong sentence can be blamed on (``pipeline.errors``), in the order the blame rules try them
STAGES = ("search", "encoder", "decoder", "attention", "prediction")
# a sentence's stage: correct, one of STAGES, or no_reference (nothing to compare with)
SENTENCE_STAGES = ("correct", *STAGES, "no_reference")

# the same in SQL over a ``sentences`` row
STAGE_SQL = (
    "CASE WHEN reference IS NULL THEN 'no_reference' WHEN exact_match THEN 'correct' ELSE blamed_stage END"
)
