import numpy as np
import pytest
import torch

from pipeline.batching import pad
from pipeline.beam import STATUS_FINISHED, STATUS_KEPT, DecodeConfig, beam_search
from pipeline.models.protocol import AttentionEdit
from pipeline.tasks import TASKS, generate
from schemas import ConfigError

SOURCES = [s for s, _ in generate(TASKS["dates"], "test", 24)]


def encode(model, sources):
    src, mask = pad([model.src_ids(s) for s in sources], model.pad_id, model.device)
    return model.encode(src, mask)


@torch.inference_mode()
def greedy(model, source: str, max_len: int, prefix: list[int] = ()) -> list[int]:
    """Plain argmax decoding, one sentence, written independently of the beam search."""
    enc = encode(model, [source])
    cache = model.start(enc, 1)
    token, out = model.bos_id, []
    for t in range(max_len):
        step = model.step(enc, torch.tensor([token]), cache)
        cache = step.cache
        logprobs = model.adjust_logprobs(torch.log_softmax(step.logits, -1), t)
        token = prefix[t] if t < len(prefix) else int(logprobs[0].argmax())
        if token == model.eos_id:
            break
        out.append(token)
    return out


@pytest.mark.parametrize("name", ["tiny", "tiny_lstm"])
def test_beam_one_is_greedy_argmax(name, request) -> None:
    model = request.getfixturevalue(name)
    with torch.inference_mode():
        out = beam_search(model, encode(model, SOURCES), DecodeConfig(beam=1, max_len=16))
    for src, d in zip(SOURCES, out, strict=True):
        assert d.ids == greedy(model, src, 16)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_tracing_does_not_change_the_result(tiny, beam) -> None:
    cfg = DecodeConfig(beam=beam, max_len=16)
    with torch.inference_mode():
        enc = encode(tiny, SOURCES)
        traced = beam_search(tiny, enc, cfg, trace=True)
        plain = beam_search(tiny, enc, cfg, trace=False)
    assert [d.ids for d in traced] == [d.ids for d in plain]
    assert [d.score for d in traced] == [d.score for d in plain]
    assert all(d.steps is None and d.tree is None for d in plain)


def test_batching_gives_the_same_hypotheses_as_one_at_a_time(tiny) -> None:
    cfg = DecodeConfig(beam=4, max_len=16)
    with torch.inference_mode():
        batched = beam_search(tiny, encode(tiny, SOURCES), cfg, trace=False)
        single = [beam_search(tiny, encode(tiny, [s]), cfg, trace=False)[0] for s in SOURCES]
    assert [d.ids for d in batched] == [d.ids for d in single]
    np.testing.assert_allclose([d.score for d in batched], [d.score for d in single], rtol=1e-4)


def test_beam_tree_is_consistent_with_the_hypothesis(tiny) -> None:
    k = 4
    with torch.inference_mode():
        out = beam_search(tiny, encode(tiny, SOURCES), DecodeConfig(beam=k, max_len=16))
    for d in out:
        tree = d.tree
        assert tree.parent[0] == -1 and tree.step[0] == 0
        assert (tree.parent[1:] < np.arange(1, len(tree.parent))).all()
        assert (tree.step[1:] == tree.step[tree.parent[1:]] + 1).all()
        np.testing.assert_allclose(
            tree.score[1:], tree.score[tree.parent[1:]] + tree.token_logprob[1:], rtol=1e-5, atol=1e-5
        )
        for t in range(1, tree.step.max() + 1):
            at = tree.step == t
            assert (tree.status[at] == STATUS_KEPT).sum() <= k
            assert at.sum() <= 2 * k
        path = np.flatnonzero(tree.on_best_path)[1:]
        spelled = tree.token_id[path].tolist()
        assert spelled == d.ids + ([tiny.eos_id] if d.ended else [])
        assert tree.status[path[-1]] == STATUS_FINISHED
        assert d.logprob == pytest.approx(float(tree.score[path[-1]]), abs=1e-4)
        assert d.score == pytest.approx(d.logprob / len(spelled), abs=1e-4)
        steps = d.steps
        assert steps.token_ids.tolist() == spelled
        assert (np.diff(steps.topk_logprobs, axis=1) <= 0).all()
        np.testing.assert_allclose(steps.mean_attention.sum(-1), 1.0, rtol=1e-4)


def test_forced_prefix_then_the_models_best_continuation(tiny) -> None:
    src = SOURCES[0]
    prefix = tiny.tgt_ids("1999-")
    with torch.inference_mode():
        out = beam_search(tiny, encode(tiny, [src]), DecodeConfig(beam=1, max_len=16), prefixes=[prefix])[0]
    assert out.ids[: len(prefix)] == prefix
    assert out.ids == greedy(tiny, src, 16, prefix)


def test_attention_edit_sets_the_row_and_leaves_earlier_steps(tiny) -> None:
    src = SOURCES[1]
    cfg = DecodeConfig(beam=1, max_len=16)
    edit = AttentionEdit(step=3, positions=(2,), mode="set")
    with torch.inference_mode():
        enc = encode(tiny, [src])
        base = beam_search(tiny, enc, cfg)[0].steps
        edited = beam_search(tiny, enc, cfg, edit=edit)[0].steps
    np.testing.assert_allclose(edited.mean_attention[:3], base.mean_attention[:3], atol=1e-6)
    expected = np.zeros(edited.mean_attention.shape[1])
    expected[2] = 1.0
    np.testing.assert_allclose(edited.mean_attention[3], expected, atol=1e-6)


def test_scale_edit_renormalises(tiny) -> None:
    w = torch.tensor([[0.5, 0.25, 0.25]])
    out = AttentionEdit(step=0, positions=(0,), mode="scale", factor=0.0).apply(w)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 0.5]]))


def test_decoding_options_are_checked(tiny) -> None:
    with pytest.raises(ConfigError, match="beam"):
        DecodeConfig(beam=0).check(tiny.vocab_size)
    with pytest.raises(ConfigError, match="topk"):
        DecodeConfig(topk=tiny.vocab_size + 1).check(tiny.vocab_size)
    with pytest.raises(ConfigError, match="max-len"):
        DecodeConfig(max_len=-1).check(tiny.vocab_size)
