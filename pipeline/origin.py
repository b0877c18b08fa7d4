"""The complete run a derived run starts from (a perturbation, planted faults): its ``runs`` row,
its sentences and the trace options a derived run inherits from it."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pipeline.taxonomy import Taxonomy
from pipeline.writer.run import RunWriter
from schemas import WarehouseError
from schemas.layout import read_manifest

INHERITED = ("part_size", "vectors", "vector_dtype", "agreement")  # and the taxonomy, the decoding


def complete_run(root: Path, run: str) -> dict[str, Any]:
    """The ``runs`` row of complete run ``run`` (WarehouseError when there is none)."""
    runs = read_manifest(root)["runs"]
    if runs.get(run, {}).get("status") != "complete":
        known = ", ".join(sorted(r for r, e in runs.items() if e.get("status") == "complete"))
        raise WarehouseError(f"no complete run {run!r} (runs: {known or 'none'})", path=str(root))
    columns = ["run_id", "model_path", "model_hash", "model_name", "corpus", "split", "decoding", "options"]
    return RunWriter(root, run).read_table("runs", columns).to_pylist()[0]


def inherited(options: dict[str, Any]) -> dict[str, Any]:
    """The TraceConfig options a derived run takes from its original run (those it recorded)."""
    same = {k: options[k] for k in INHERITED if k in options}
    if "taxonomy" in options:
        same["taxonomy"] = Taxonomy.from_options(options["taxonomy"])
    return same


def sentences(
    root: Path, run: str, sent_ids: Collection[int] | None, columns: tuple[str, ...] = ("source", "reference")
) -> list[dict[str, Any]]:
    """sent_id and ``columns`` of the chosen sentences of ``run``, in sent_id order."""
    rows = RunWriter(root, run).read_table("sentences", ["sent_id", *columns]).to_pylist()
    wanted = None if sent_ids is None else set(sent_ids)
    return sorted((r for r in rows if wanted is None or r["sent_id"] in wanted), key=lambda r: r["sent_id"])
