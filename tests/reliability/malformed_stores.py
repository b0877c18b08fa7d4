"""The malformed warehouses and options of ``test_malformed.py`` (registered in ``CASES`` of
``malformed_cases``, which holds the corpora and checkpoints)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from schemas import SCHEMA_VERSION
from schemas.layout import part_path, run_dir
from tests.reliability.malformed_cases import Expect, _edit_json, _trace, _truncate, case


# -- warehouses -----------------------------------------------------------------------------------
def _wh_case(
    name: str, damage: Callable[[Path], Expect], argv: Callable[[Path], list[str]] | None = None
) -> None:
    @case(f"warehouse-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        copy = d / "wh"
        shutil.copytree(wh, copy)
        expect = damage(copy)
        return (
            argv(copy) if argv else ["sql", "--warehouse", str(copy), "SELECT count(*) FROM sentences"]
        ), expect


_DAMAGED = "; restore it from a copy, or delete run r's directories and trace it again"
_wh_case(
    "truncated-part",
    lambda w: (
        f"{_truncate(part_path(w, 'attention', 'r', 1))}: damaged Parquet part "
        f"(No magic bytes found at end of file){_DAMAGED}"
    ),
)
_wh_case(
    "truncated-part-errors-verb",
    lambda w: (
        f"{_truncate(part_path(w, 'beam_nodes', 'r', 2))}: damaged Parquet part "
        f"(No magic bytes found at end of file){_DAMAGED}"
    ),
    lambda w: ["errors", "--warehouse", str(w)],
)
_wh_case(
    "emptied-part",
    lambda w: (
        f"{_truncate(part_path(w, 'sentences', 'r', 0), 0)}: damaged Parquet part "
        f"(File too small to be a Parquet file){_DAMAGED}"
    ),
)
_wh_case(
    "missing-table",
    lambda w: (
        shutil.rmtree(w / "tables" / "attention"),
        f"{run_dir(w, 'attention', 'r')}: run 'r' is damaged: 0 of 3 part files of table attention are "
        "there; restore them from a copy, or delete the run's directories and trace it again",
    )[1],
)
_wh_case(
    "missing-part",
    lambda w: (
        part_path(w, "reference_steps", "r", 1).unlink(),
        f"{run_dir(w, 'reference_steps', 'r')}: run 'r' is damaged: 2 of 3 part files of table "
        "reference_steps are there; restore them from a copy, or delete the run's directories and trace it "
        "again",
    )[1],
)
_wh_case(
    "newer-schema",
    lambda w: (
        _edit_json(w / "manifest.json", lambda j: j.update(schema_version=SCHEMA_VERSION + 1)),
        f"{w / 'manifest.json'}: written by schema version {SCHEMA_VERSION + 1}; this beamscope reads up to "
        f"{SCHEMA_VERSION} - upgrade beamscope",
    )[1],
)
_wh_case(
    "older-schema",
    lambda w: (
        _edit_json(w / "manifest.json", lambda j: j.update(schema_version=1)),
        f"{w / 'manifest.json'}: written by schema version 1, older than {SCHEMA_VERSION}; "
        f"run `beamscope migrate --warehouse {w}` to upgrade it in place",
    )[1],
)
_wh_case(
    "manifest-not-json",
    lambda w: (
        (w / "manifest.json").write_text(""),
        f"{w / 'manifest.json'}: unreadable manifest: Expecting value: line 1 column 1 (char 0)",
    )[1],
)
_wh_case(
    "manifest-of-another-tool",
    lambda w: (
        (w / "manifest.json").write_text('{"format": "iceberg"}'),
        f"{w / 'manifest.json'}: not a beamscope warehouse manifest",
    )[1],
)
_wh_case(
    "manifest-without-runs",
    lambda w: (
        _edit_json(w / "manifest.json", lambda j: j.pop("runs")),
        f'{w / "manifest.json"}: damaged manifest: no "runs" object',
    )[1],
)
_wh_case(
    "foreign-directory-sql",
    lambda w: (
        (w / "manifest.json").unlink(),
        f"{w}: not a beamscope warehouse (no manifest.json); create one with `beamscope trace`",
    )[1],  # fmt: skip
)


@case("warehouse-foreign-directory-trace")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    (d / "photos").mkdir()
    (d / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    return (
        _trace(model, "task:dates:test:3", d / "photos"),
        f"{d / 'photos'}: directory exists, is not empty and is not a beamscope warehouse",
    )


@case("warehouse-missing")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    return ["errors", "--warehouse", str(d / "nope")], f"{d / 'nope'}: no such warehouse directory"


# -- options --------------------------------------------------------------------------------------
def _option_case(name: str, extra: list[str], message: str) -> None:
    @case(f"option-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        return _trace(model, "task:dates:test:3", d / "out", *extra), message


_option_case("beam-0", ["--beam", "0"], "--beam must be at least 1 (got 0)")
_option_case("beam-negative", ["--beam", "-2"], "--beam must be at least 1 (got -2)")
_option_case("topk-0", ["--topk", "0"], "--topk must be between 1 and the vocabulary size {vocab} (got 0)")
_option_case(
    "topk-above-vocabulary",
    ["--topk", "5000"],
    "--topk must be between 1 and the vocabulary size {vocab} (got 5000)",
)
_option_case("max-len-negative", ["--max-len", "-3"], "--max-len must be at least 1 (got -3)")
_option_case("batch-size-0", ["--batch-size", "0"], "--batch-size must be at least 1 (got 0)")
_option_case("part-size-negative", ["--part-size", "-1"], "--part-size must be at least 1 (got -1)")
_option_case("length-penalty-nan", ["--length-penalty", "nan"], "--length-penalty must be finite (got nan)")
_option_case("device-unknown", ["--device", "tpu9"], "unknown device 'tpu9' (use auto, cpu, cuda or cuda:N)")
_option_case(
    "run-name-path",
    ["--run-name", "../../etc"],
    "invalid run name '../../etc': use letters, digits, '_', '-' and '.' (max 128)",
)
_option_case(
    "neighbours-run-unknown",
    ["--neighbours-run", "nope"],
    "neighbours run 'nope' is not a complete run of this warehouse",
)


def _sql_option_case(name: str, extra: list[str], message: str) -> None:
    @case(f"option-sql-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        return ["sql", "--warehouse", str(wh), *extra, "SELECT 1"], message


_sql_option_case("max-rows-0", ["--max-rows", "0"], "--max-rows must be at least 1")
_sql_option_case("timeout-negative", ["--timeout", "-1"], "--timeout must be positive")
_sql_option_case("out-xlsx", ["--out", "r.xlsx"], "--out r.xlsx: use a .csv, .parquet, .json or .jsonl file")


def _neighbours_case(name: str, spoil: Callable[[Path], object], message: str) -> None:
    """A trace whose --neighbours-run names run 'r' of a copy of the warehouse, spoiled first."""

    @case(f"option-neighbours-run-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        w = d / "wh"
        shutil.copytree(wh, w)
        spoil(w)
        return _trace(model, "task:dates:test:3", w, "--neighbours-run", "r", "--run-name", "t"), message


def _runs(w: Path, **fields: object) -> None:
    _edit_json(w / "manifest.json", lambda j: j["runs"]["r"].update(fields))


_neighbours_case(
    "other-model", lambda w: _runs(w, model_hash="0" * 16), "neighbours run 'r' was traced with another model"
)
_neighbours_case(
    "without-vectors",
    lambda w: _runs(w, vectors=False),
    "neighbours run 'r' kept no vectors (traced with --no-vectors)",
)
_neighbours_case(
    "vectors-deleted",
    lambda w: shutil.rmtree(w / "vectors"),
    "run 'r' has no stored encoder states (traced with --no-vectors?)",
)
