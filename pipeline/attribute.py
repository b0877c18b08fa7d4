"""``beamscope attribute``: the attribution of a traced run's produced tokens, part by part.

The run's own model (the one its ``runs`` row names, same hash) attributes the tokens the run
stored (source and hypothesis ids), so positions match the other tables exactly. The parts are
the run's own; each is written and marked done in the manifest, so a killed run resumes. A
run has one attribution at a time: another method, step count or selection replaces it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pipeline.attribution import Method, Produced, attribute
from pipeline.models import load_run_model, resolve_device
from pipeline.threads import torch_threads
from pipeline.writer.run import RunWriter
from schemas import ConfigError, WarehouseError
from schemas.layout import read_manifest, warehouse_root
from schemas.tables import ATTRIBUTION_TABLES

ENTRY = "attribution"  # the run's manifest entry of its attribution


@dataclass(frozen=True)
class AttributeConfig:
    warehouse: str
    run: str
    method: Method = field(default_factory=Method)
    sent_ids: Collection[int] | None = None  # None: every sentence of the run
    selection: str = "all"  # how ``sent_ids`` were chosen (recorded: a --where)
    device: str = "auto"
    batch_rows: int = 64  # produced tokens per batch (ig: times its steps per forward pass)
    threads: int | None = None


@dataclass(frozen=True)
class AttributeSummary:
    run_id: str
    warehouse: Path
    n_sentences: int
    n_tokens: int  # produced tokens attributed in this call
    resumed_parts: int
    seconds: float
    median_rel_delta: float | None = None  # ig: median |delta| / |logprob - baseline_logprob|


def fingerprint(method: Method, sent_ids: Collection[int] | None) -> str:
    """What a resumed attribution must match: its method and the sentences chosen."""
    chosen = "all" if sent_ids is None else sorted(sent_ids)
    return hashlib.sha256(json.dumps([method.describe(), chosen]).encode()).hexdigest()[:16]


def manifest_entry(method: Method, sent_ids: Collection[int] | None, selection: str) -> dict:
    """The run's manifest entry of an attribution (without its progress)."""
    return {**method.describe(), "selection": selection, "fingerprint": fingerprint(method, sent_ids)}


def attribute_run(cfg: AttributeConfig, progress: bool = True) -> AttributeSummary:
    """Attribute the produced tokens of ``cfg.sent_ids`` of run ``cfg.run``; resumable."""
    cfg.method.check()
    if cfg.batch_rows < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {cfg.batch_rows})")
    root = warehouse_root(cfg.warehouse)
    runs = read_manifest(root)["runs"]
    if runs.get(cfg.run, {}).get("status") != "complete":
        known = ", ".join(sorted(r for r, e in runs.items() if e.get("status") == "complete"))
        raise WarehouseError(f"no complete run {cfg.run!r} (runs: {known or 'none'})", path=str(root))
    writer = RunWriter(root, cfg.run)
    run = writer.read_table("runs", ["run_id", "model_path", "model_hash", "decoding"]).to_pylist()[0]
    model = load_run_model(run, resolve_device(cfg.device))
    parts = writer.part_numbers("sentences")
    wanted = None if cfg.sent_ids is None else set(cfg.sent_ids)
    todo_items = {p: _items(writer, p, wanted) for p in parts}
    n = sum(len(i) for i in todo_items.values())
    if n == 0:
        raise ConfigError(f"the selection ({cfg.selection}) has no sentence of run {cfg.run!r}")
    entry = manifest_entry(cfg.method, cfg.sent_ids, cfg.selection)
    done = writer.begin_derived(ENTRY, ATTRIBUTION_TABLES, entry.pop("fingerprint"), entry)
    todo = [p for p in parts if p not in done]
    tokens = sum(len(i.out_ids) for p in todo for i in todo_items[p])
    rel_deltas: list[np.ndarray] = []
    start = time.perf_counter()
    with (
        torch_threads(cfg.threads),
        tqdm(total=tokens, desc=f"attribute {cfg.run}", unit="tok", disable=not progress) as bar,
    ):
        for part in todo:
            tables = attribute(model, todo_items[part], cfg.method, cfg.run, cfg.batch_rows, bar)
            writer.write_tables(part, tables)
            writer.derived_done(ENTRY, part)
            rel_deltas.append(_rel_delta(tables["attribution_steps"]))
    writer.derived_done(ENTRY, complete=True)
    seconds = time.perf_counter() - start
    rel = np.concatenate(rel_deltas) if rel_deltas else np.array([])
    median = float(np.median(rel)) if cfg.method.name == "ig" and rel.size else None
    return AttributeSummary(cfg.run, root, n, tokens, len(done), seconds, median)


def _rel_delta(steps: pa.Table) -> np.ndarray:
    """IG's convergence delta of each step relative to the change it integrates over."""
    cols = {
        c: steps[c].to_numpy(zero_copy_only=False).astype(float)
        for c in ("logprob", "baseline_logprob", "delta")
    }
    gap = np.abs(cols["logprob"] - cols["baseline_logprob"])
    return np.abs(cols["delta"]) / np.maximum(gap, 1e-6)


def _items(writer: RunWriter, part: int, wanted: set[int] | None) -> list[Produced]:
    """The stored source and hypothesis ids of the chosen sentences of one part."""
    src = _ids_by_sentence(writer.read_part("source_tokens", part, ["sent_id", "src_pos", "token_id"]))
    out = _ids_by_sentence(writer.read_part("target_steps", part, ["sent_id", "step", "token_id"]))
    keep = [s for s in sorted(out) if wanted is None or s in wanted]
    return [Produced(s, src[s], out[s]) for s in keep if out[s]]


def _ids_by_sentence(table: pa.Table) -> dict[int, list[int]]:
    """``token_id`` lists per ``sent_id``, in the order of the table's second column."""
    order = table.column_names[1]
    rows = table.sort_by([("sent_id", "ascending"), (order, "ascending")])
    out: dict[int, list[int]] = {}
    for sid, tok in zip(rows["sent_id"].to_pylist(), rows["token_id"].to_pylist(), strict=True):
        out.setdefault(sid, []).append(tok)
    return out
