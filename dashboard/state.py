"""What the running dashboard serves (set once by ``create_app``): the warehouse, its sandbox,
and the models what-if re-decoding loads on first use."""

from __future__ import annotations

import threading
from typing import Any

from pipeline.models import check_run_model, for_decoding, load_model, resolve_device, run_decoding
from pipeline.models.protocol import Seq2SeqAdapter
from warehouse import Warehouse
from warehouse.sandbox import SafeSQL

_current: dict[str, Any] = {}
_models: dict[str | tuple[str, str | None, str | None], Seq2SeqAdapter] = {}
_models_lock = threading.Lock()


def set_warehouse(wh: Warehouse, sandbox: SafeSQL, model: str | None = None, device: str = "auto") -> None:
    _current.update(wh=wh, sandbox=sandbox, model=model, device=device)


def warehouse() -> Warehouse:
    return _current["wh"]


def sandbox() -> SafeSQL:
    """The read-only, time- and row-limited executor for user-written SQL."""
    return _current["sandbox"]


def model_for(run: dict[str, Any]) -> Seq2SeqAdapter:
    """The model of a ``runs`` row (``serve --model`` overrides its recorded path), loaded once.

    Raises CheckpointError when the model is not where the run (or --model) says, or is another
    model than the one that traced the run (its token ids would mean other tokens).
    """
    path = _current.get("model") or run["model_path"]
    decoding = run_decoding(run)
    key = (path, decoding.src_lang, decoding.tgt_lang)  # multilingual models: one copy per languages
    with _models_lock:
        if path not in _models:
            _models[path] = load_model(path, resolve_device(_current.get("device", "auto")))
        check_run_model(_models[path], run, path)
        if key not in _models:
            _models[key] = for_decoding(_models[path], decoding)[0]
        return _models[key]
