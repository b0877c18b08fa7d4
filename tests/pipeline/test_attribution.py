"""Attribution per produced token: completeness, and equality with captum run directly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.attribution import Method, attribute
from schemas import ConfigError
from tests.pipeline.attribution_checks import (
    assert_complete,
    assert_equals_captum,
    frames,
    produced,
)

SOURCES = ["march 5, 2021", "12/01/1999", "tuesday, june 3 2003", "7 aug 1987"]


@pytest.mark.parametrize("which", ["tiny", "tiny_lstm"])
def test_integrated_gradients_are_complete(which, request) -> None:
    model = request.getfixturevalue(which)
    steps = assert_complete(model, produced(model, SOURCES))
    assert len(steps) >= len(SOURCES) * 3


@pytest.mark.parametrize("which", ["tiny", "tiny_lstm"])
@pytest.mark.parametrize("method", ["ig", "grad_x_input"])
def test_table_equals_captum_run_directly(which, method, request) -> None:
    model = request.getfixturevalue(which)
    assert assert_equals_captum(model, produced(model, SOURCES), method) >= 9


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
