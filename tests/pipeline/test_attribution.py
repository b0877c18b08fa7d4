"""Attribution per produced token: completeness, and equality with captum run directly."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

from pipeline.attribution import Method, Produced, attribute
from pipeline.batching import pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.vocab import PAD
from schemas import ConfigError

SOURCES = ["march 5, 2021", "12/01/1999", "tuesday, june 3 2003", "7 aug 1987"]


def produced(model, sources: list[str]) -> list[Produced]:
    """Each source with the model's greedy output (end of sentence included)."""
    with torch.inference_mode():
        src, mask = pad([model.src_ids(s) for s in sources], model.pad_id, model.device)
        decoded = beam_search(model, model.encode(src, mask), DecodeConfig(beam=1, max_len=16), trace=False)
    return [
        Produced(i, model.src_ids(s), [*d.ids, model.eos_id] if d.ended else list(d.ids))
        for i, (s, d) in enumerate(zip(sources, decoded, strict=True))
    ]


def frames(tables):
    return tables["attribution"].to_pandas(), tables["attribution_steps"].to_pandas()


@pytest.mark.parametrize("which", ["tiny", "tiny_lstm"])
def test_integrated_gradients_are_complete(which, request) -> None:
    """Per step, the scores sum to logprob - baseline_logprob within captum's delta, and the delta
    is small next to that difference (32 Gauss-Legendre steps)."""
    model = request.getfixturevalue(which)
    rows, steps = frames(attribute(model, produced(model, SOURCES), Method("ig", 32)))
    sums = rows.groupby(["sent_id", "step"]).score.sum().rename("total").reset_index()
    steps = steps.merge(sums, on=["sent_id", "step"])
    gap = steps.logprob - steps.baseline_logprob
    assert len(steps) >= len(SOURCES) * 3
    assert np.allclose(steps.total, gap + steps.delta, atol=1e-4)
    assert (steps.delta.abs() <= 0.01 * gap.abs() + 1e-3).all()
    assert (steps.method == "ig").all() and (steps.ig_steps == 32).all()
    # every real source position and every decoder input position up to the step has a row
    for item in produced(model, SOURCES):
        for t in range(len(item.out_ids)):
            mine = rows[(rows.sent_id == item.sent_id) & (rows.step == t)]
            assert sorted(mine[mine.side == "src"].position) == list(range(len(item.src_ids)))
            assert sorted(mine[mine.side == "tgt"].position) == list(range(t + 1))


def _zero_pad_copy(model):
    """The model with zero PAD embeddings: captum's layer methods, given PAD ids as the baseline,
    then integrate from the same all-zero embedding as beamscope."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for emb in twin.embeddings():
            emb.weight[PAD] = 0.0
    return twin


def _captum_direct(model, item: Produced, step: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """captum's own layer attribution for one sentence and step, without beamscope's batching."""
    src = torch.tensor([list(item.src_ids)])
    tgt_in = torch.tensor([[model.bos_id, *item.out_ids[:step]]])
    mask = torch.ones_like(src, dtype=torch.bool)

    def f(src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        logits = model.forced(model.encode(src_ids, mask.expand(len(src_ids), -1)), tgt_ids).logits
        return logits[:, step].float().log_softmax(-1)[:, item.out_ids[step]]

    layers = list(model.embeddings())
    if method == "ig":
        attr = LayerIntegratedGradients(f, layers).attribute(
            (src, tgt_in), baselines=(torch.full_like(src, PAD), torch.full_like(tgt_in, PAD)), n_steps=32
        )
    else:
        attr = LayerGradientXActivation(f, layers).attribute((src, tgt_in))
    return attr[0][0].sum(-1).detach().numpy(), attr[1][0].sum(-1).detach().numpy()


@pytest.mark.parametrize("which", ["tiny", "tiny_lstm"])
@pytest.mark.parametrize("method", ["ig", "grad_x_input"])
def test_table_equals_captum_run_directly(which, method, request) -> None:
    model = _zero_pad_copy(request.getfixturevalue(which))
    items = produced(model, SOURCES)
    rows, _ = frames(attribute(model, items, Method(method, 32), max_rows=5))  # batches cut mid-sentence
    checked = 0
    for item in items[:3]:
        for t in range(len(item.out_ids)):
            want_src, want_tgt = _captum_direct(model, item, t, method)
            mine = rows[(rows.sent_id == item.sent_id) & (rows.step == t)].sort_values(["side", "position"])
            assert np.allclose(mine[mine.side == "src"].score, want_src, atol=1e-4)
            assert np.allclose(mine[mine.side == "tgt"].score, want_tgt, atol=1e-4)
            checked += 1
    assert checked >= 9


def test_saliency_is_the_gradient_magnitude(tiny) -> None:
    rows, steps = frames(attribute(tiny, produced(tiny, SOURCES[:2]), Method("saliency")))
    assert (rows.score >= 0).all() and rows.score.max() > 0
    assert steps.baseline_logprob.isna().all() and steps.delta.isna().all()


@pytest.mark.parametrize(
    ("method", "msg"), [(Method("nope"), "unknown attribution method"), (Method("ig", 0), "--steps")]
)
def test_bad_settings_are_refused(tiny, method, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        attribute(tiny, produced(tiny, SOURCES[:1]), method)


# -- in a warehouse: trace --attribution and beamscope attribute write the same rows ---------------


def _read(root, table: str, run: str):
    import pyarrow.parquet as pq

    parts = sorted((root / "tables" / table / f"run={run}").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas()


def test_trace_and_attribute_write_the_same_rows(tiny_dir, tmp_path) -> None:
    from pipeline.attribute import AttributeConfig, attribute_run
    from tests.helpers import trace_run

    root = tmp_path / "wh"
    method = Method("grad_x_input")
    trace_run(tiny_dir, "task:dates:test:24", root, "at-trace", part_size=10, attribution=method)
    trace_run(tiny_dir, "task:dates:test:24", root, "later", part_size=10)
    s = attribute_run(AttributeConfig(str(root), "later", method, device="cpu"), progress=False)
    assert s.n_sentences == 24 and s.resumed_parts == 0 and s.n_tokens > 24
    keys = ["sent_id", "step", "side", "position"]
    a = _read(root, "attribution", "at-trace").sort_values(keys).reset_index(drop=True)
    b = _read(root, "attribution", "later").sort_values(keys).reset_index(drop=True)
    assert len(a) == len(b) > 0 and (a[keys] == b[keys]).all().all()
    assert np.allclose(a.score, b.score, atol=1e-4)
    steps = _read(root, "attribution_steps", "later")
    produced_steps = _read(root, "target_steps", "later")
    assert len(steps) == len(produced_steps)  # every produced token, end of sentence included
    # the attributed log-probability is the one the trace recorded for the token
    merged = steps.merge(produced_steps, on=["sent_id", "step"], suffixes=("", "_trace"))
    assert np.allclose(merged.logprob, merged.logprob_trace, atol=1e-3)


def test_attribute_resumes_and_replaces(tiny_dir, tmp_path, monkeypatch) -> None:
    import json

    import pipeline.attribute as attribute_mod
    from pipeline.attribute import AttributeConfig, attribute_run
    from tests.helpers import trace_run

    root = tmp_path / "wh"
    trace_run(tiny_dir, "task:dates:test:30", root, "r", part_size=10)
    cfg = AttributeConfig(
        str(root), "r", Method("saliency"), sent_ids=[1, 2, 15, 25], selection="x", device="cpu"
    )
    real, calls = attribute_mod.attribute, []

    def dies_on_second_part(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(attribute_mod, "attribute", dies_on_second_part)
    with pytest.raises(KeyboardInterrupt):
        attribute_run(cfg, progress=False)
    monkeypatch.setattr(attribute_mod, "attribute", real)
    s = attribute_run(cfg, progress=False)
    assert s.resumed_parts == 1 and s.n_sentences == 4
    assert sorted(set(_read(root, "attribution_steps", "r").sent_id)) == [1, 2, 15, 25]
    entry = json.loads((root / "manifest.json").read_text())["runs"]["r"]["attribution"]
    assert entry["status"] == "complete" and entry["method"] == "saliency" and entry["selection"] == "x"
    # another method replaces the whole attribution
    attribute_run(
        AttributeConfig(str(root), "r", Method("grad_x_input"), sent_ids=[3], device="cpu"), progress=False
    )
    steps = _read(root, "attribution_steps", "r")
    assert set(steps.sent_id) == {3} and set(steps.method) == {"grad_x_input"}


def test_attribute_refuses_a_changed_model_and_bad_runs(tiny_dir, tmp_path) -> None:
    import shutil

    from pipeline.attribute import AttributeConfig, attribute_run
    from schemas import CheckpointError, WarehouseError
    from tests.helpers import trace_run

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    root = tmp_path / "wh"
    trace_run(model, "task:dates:test:8", root, "r")
    with pytest.raises(WarehouseError, match="no complete run 'nope'"):
        attribute_run(AttributeConfig(str(root), "nope", device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="has no sentence"):
        attribute_run(AttributeConfig(str(root), "r", sent_ids=[99], device="cpu"), progress=False)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="not the model that traced run 'r'"):
        attribute_run(AttributeConfig(str(root), "r", device="cpu"), progress=False)
    shutil.rmtree(model)
    with pytest.raises(CheckpointError, match="no such model directory"):
        attribute_run(AttributeConfig(str(root), "r", device="cpu"), progress=False)
    assert not (root / "tables" / "attribution").exists()
