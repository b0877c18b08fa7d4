"""The error taxonomy against cases with known answers: every rule must fire, and must not."""

import numpy as np
import pytest

from pipeline.taxonomy import Evidence, Taxonomy, classify

TAX = Taxonomy()
PEAKED = np.array(
    [[0.94, 0.02, 0.02, 0.02], [0.02, 0.94, 0.02, 0.02], [0.02, 0.02, 0.94, 0.02], [0.02, 0.02, 0.02, 0.94]]
)


def evidence(**kw) -> Evidence:
    base = dict(
        search_error=False,
        diverge=1,
        hyp_ids=[5, 7, 6, 2],
        ref_ids=[5, 6, 7, 2],
        ended=True,
        topk_at=[7, 6, 9],
        hyp_attention=PEAKED,
        ref_attention=PEAKED,
        has_unknown=False,
    )
    return Evidence(**{**base, **kw})


def test_search_blamed_first() -> None:
    v = classify(evidence(search_error=True, encoder_min_agreement=0.0, decoder_agreement=1.0), TAX, None)
    assert v.stage == "search"


@pytest.mark.parametrize("agreement,stage", [(0.2, "encoder"), (0.5, "prediction"), (None, "prediction")])
def test_encoder_rule(agreement, stage) -> None:
    assert classify(evidence(encoder_min_agreement=agreement), TAX, None).stage == stage


@pytest.mark.parametrize("agreement,stage", [(0.8, "decoder"), (0.5, "decoder"), (0.4, "prediction")])
def test_decoder_rule(agreement, stage) -> None:
    v = classify(evidence(encoder_min_agreement=0.9, decoder_agreement=agreement), TAX, None)
    assert v.stage == stage


def test_encoder_comes_before_decoder() -> None:
    assert classify(evidence(encoder_min_agreement=0.1, decoder_agreement=0.9), TAX, None).stage == "encoder"


def test_diffuse_attention_at_the_divergence() -> None:
    diffuse = PEAKED.copy()
    diffuse[1] = 0.25
    v = classify(evidence(ref_attention=diffuse, hyp_attention=diffuse), TAX, None)
    assert v.stage == "attention" and "diffuse_attention" in v.tags
    assert "diffuse_attention" not in classify(evidence(), TAX, None).tags


def test_attention_returning_to_a_covered_token() -> None:
    ref = PEAKED.copy()
    ref[1] = PEAKED[0]  # at t* = 1 the focus goes back to position 0, covered at step 0
    v = classify(evidence(ref_attention=ref, hyp_attention=ref), TAX, None)
    assert v.stage == "attention" and "covered_attention" in v.tags
    assert "covered_attention" not in classify(evidence(), TAX, None).tags  # monotone: never fires


def test_prediction_with_reference_in_or_outside_topk() -> None:
    inside = classify(evidence(topk_at=[7, 6]), TAX, None)
    assert inside.stage == "prediction" and "ref_in_topk" in inside.tags
    outside = classify(evidence(topk_at=[7, 9]), TAX, None)
    assert outside.stage == "prediction" and "ref_outside_topk" in outside.tags


def test_under_translation() -> None:
    hyp = PEAKED[[0, 0, 1, 3]]  # never attends source position 2, which the reference needs
    v = classify(evidence(hyp_attention=hyp), TAX, None)
    assert "under_translation" in v.tags
    assert "under_translation" not in classify(evidence(), TAX, None).tags


def test_over_translation_by_repetition_or_returning_attention() -> None:
    assert "over_translation" in classify(evidence(hyp_ids=[5, 7, 5, 7, 2]), TAX, None).tags
    returning = PEAKED[[0, 1, 1, 3]]
    assert "over_translation" in classify(evidence(hyp_attention=returning), TAX, None).tags
    assert "over_translation" not in classify(evidence(), TAX, None).tags


def test_length_tags() -> None:
    assert "too_short" in classify(evidence(hyp_ids=[5, 2]), TAX, None).tags
    assert "too_long" in classify(evidence(hyp_ids=[5, 7, 6, 8, 8, 9, 2]), TAX, None).tags
    assert "truncated" in classify(evidence(ended=False, hyp_ids=[5, 7, 6, 6]), TAX, None).tags
    tags = classify(evidence(), TAX, None).tags
    assert not {"too_short", "too_long", "truncated"} & set(tags)


def test_unknown_tokens() -> None:
    assert "unknown_tokens" in classify(evidence(has_unknown=True), TAX, None).tags
    assert "unknown_tokens" in classify(evidence(hyp_ids=[5, 3, 6, 2]), TAX, 3).tags
    assert "unknown_tokens" not in classify(evidence(), TAX, 3).tags
