"""Model adapters: built-in networks and (by directory detection) Hugging Face models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.models.builtin import FORMAT, BuiltinModel, load_builtin
from pipeline.models.protocol import Seq2SeqAdapter
from schemas import CheckpointError, ConfigError

if TYPE_CHECKING:
    from pipeline.beam import DecodeConfig


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def load_model(path: str | Path, device: str | torch.device = "auto") -> Seq2SeqAdapter:
    """Load the model directory at ``path`` (format detected from its ``config.json``)."""
    path = Path(path)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if not path.is_dir():
        raise CheckpointError("no such model directory", path=str(path))
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointError("not a model directory (no config.json)", path=str(path))
    try:
        kind = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"not valid JSON ({e})", path=str(config)) from None
    if isinstance(kind, dict) and kind.get("format") == FORMAT:
        return load_builtin(path, dev)
    if isinstance(kind, dict) and "format" not in kind and "model_type" in kind:
        return _load_hf(path, dev)
    raise CheckpointError(
        'not a beamscope checkpoint (config.json has no "format": "beamscope-model")'
        ' nor a Hugging Face model (no "model_type")',
        path=str(config),
    )


def load_run_model(
    run: dict, device: str | torch.device = "auto", path: str | Path | None = None
) -> Seq2SeqAdapter:
    """The model that traced ``run`` (a ``runs`` row), from ``path`` or the path the run recorded.

    Raises CheckpointError when it is not there, or is another model than the one that traced
    the run (its hash differs: its token ids would mean other tokens)."""
    where = path or run["model_path"]
    model = load_model(where, device)
    check_run_model(model, run, where)
    return for_decoding(model, run_decoding(run))[0]


def run_decoding(run: dict) -> DecodeConfig:
    """The ``DecodeConfig`` a ``runs`` row recorded."""
    from pipeline.beam import DecodeConfig

    return DecodeConfig(**json.loads(run["decoding"]))


def check_run_model(model: Seq2SeqAdapter, run: dict, where: str | Path) -> None:
    """Raise CheckpointError unless ``model`` is the one that traced ``run``."""
    if run["model_hash"] and getattr(model, "hash", "") != run["model_hash"]:
        raise CheckpointError(
            f"this is not the model that traced run {run['run_id']!r} (its weights changed since)",
            path=str(where),
        )


def for_decoding(model: Seq2SeqAdapter, dec: DecodeConfig) -> tuple[Seq2SeqAdapter, DecodeConfig]:
    """``model`` reading and writing ``dec``'s languages (multilingual Hugging Face models), and
    ``dec`` with what they resolved to: the source language in effect, the decoder's start token and
    the forced first token. A ConfigError when ``dec`` recorded other tokens (a run traced by another
    configuration of the model) or names languages a model without language codes."""
    current = getattr(model, "languages", (None, None))
    wanted = (dec.src_lang or current[0], dec.tgt_lang or current[1])
    if wanted != current:
        if not hasattr(model, "with_languages"):
            raise ConfigError(f"--src-lang/--tgt-lang: {model.arch} models take no language codes")
        model = model.with_languages(dec.src_lang, dec.tgt_lang)
    tokens = {
        "decoder_start_token_id": int(model.bos_id),
        "forced_bos_token_id": getattr(model, "forced_bos_id", None),
    }
    for name, value in tokens.items():
        if getattr(dec, name) is not None and getattr(dec, name) != value:
            raise ConfigError(
                f"the run was decoded with {name}={getattr(dec, name)}, the model gives {value} "
                "(another language setting or generation config)"
            )
    return model, dataclasses.replace(dec, src_lang=wanted[0], tgt_lang=wanted[1], **tokens)


def _load_hf(path: Path, device: torch.device) -> Seq2SeqAdapter:
    """A Hugging Face model directory (imported lazily: transformers is an optional extra)."""
    try:
        from pipeline.models.hf import load_hf
    except ImportError as e:
        raise CheckpointError(
            f"a Hugging Face model needs transformers ({e}; pip install 'beamscope[hf]')", path=str(path)
        ) from None
    return load_hf(path, device)


__all__ = [
    "BuiltinModel",
    "Seq2SeqAdapter",
    "check_run_model",
    "for_decoding",
    "load_model",
    "load_run_model",
    "resolve_device",
    "run_decoding",
]
