"""Checkpoints: save/load round trip; corrupt or mismatched ones give a clear error."""

import json
import shutil

import pytest
import torch

from pipeline.models import load_model
from schemas import CheckpointError


def test_round_trip_gives_identical_outputs(tiny, tmp_path) -> None:
    tiny.save(tmp_path / "copy")
    again = load_model(tmp_path / "copy", "cpu")
    for a, b in zip(tiny.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert again.src_vocab == tiny.src_vocab and again.tgt_vocab == tiny.tgt_vocab


def _copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights(tiny_dir, tmp_path) -> None:
    d = _copy(tiny_dir, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_model(d, "cpu")


def test_config_of_another_architecture(tiny_dir, tmp_path) -> None:
    d = _copy(tiny_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["arch"] = "lstm"
    cfg["model"] = {"d_model": 32}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_model(d, "cpu")


def test_changed_sizes(tiny_dir, tmp_path) -> None:
    d = _copy(tiny_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(d, "cpu")


@pytest.mark.parametrize("missing", ["tgt_vocab.json", "model.safetensors", "config.json"])
def test_missing_files(tiny_dir, tmp_path, missing) -> None:
    d = _copy(tiny_dir, tmp_path)
    (d / missing).unlink()
    with pytest.raises(CheckpointError):
        load_model(d, "cpu")


def test_not_a_directory_and_bad_json(tiny_dir, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such model directory"):
        load_model(tmp_path / "nope", "cpu")
    d = _copy(tiny_dir, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(d, "cpu")
