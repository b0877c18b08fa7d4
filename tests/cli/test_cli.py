"""The ``beamscope`` command as users run it (a real subprocess)."""

import ast
import json
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, run_cli

VERBS = ["train", "trace", "calibrate", "index", "migrate", "sql", "errors", "compare", "serve", "demo"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(verb) -> None:
    proc = run_cli(verb, "--help")
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and f"beamscope {verb}" in proc.stdout


def test_version_is_the_installed_distributions() -> None:
    proc = run_cli("--version", isolated=True)  # the installed entry point
    assert proc.returncode == 0 and proc.stdout == f"beamscope {version('beamscope')}\n"


def test_train_offers_the_registered_tasks_and_archs() -> None:
    from pipeline.archs import ARCH_NAMES
    from pipeline.models.builtin import ARCHS

    assert tuple(ARCHS) == ARCH_NAMES  # --arch choices (named without importing torch)
    proc = run_cli("train", "--task", "nope", "--out", "x")
    assert proc.returncode == 2
    assert "argument --task: invalid choice: 'nope' (choose from 'dates', 'numbers')" in proc.stderr


def test_nothing_below_the_cli_imports_beamscope() -> None:
    root = Path(__file__).resolve().parents[2]
    for package in ("schemas", "pipeline", "warehouse", "dashboard"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                assert not any(n.split(".")[0] == "beamscope" for n in names), path


def test_train_writes_a_loadable_checkpoint(tmp_path) -> None:
    out = tmp_path / "m"
    proc = run_cli(
        "train",
        "--task",
        "numbers",
        "--arch",
        "lstm",
        "--out",
        str(out),
        "--steps",
        "5",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation exact match" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "src_vocab.json",
        "tgt_vocab.json",
    ]
    assert json.loads((out / "config.json").read_text())["task"] == "numbers"


def test_sql_formats(warehouse_dir) -> None:
    q = "SELECT run_id, count(*) AS n FROM sentences GROUP BY 1 ORDER BY 1"
    csv = run_cli("sql", "--warehouse", str(warehouse_dir), "--format", "csv", q)
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines() == ["run_id,n", "beam4,48", "greedy,48", "lstm,48"]
    js = run_cli("sql", "--warehouse", str(warehouse_dir), "--format", "json", q)
    assert [json.loads(line)["n"] for line in js.stdout.splitlines()] == [48, 48, 48]
    table = run_cli("sql", "--warehouse", str(warehouse_dir), q)
    assert "beam4" in table.stdout and "48" in table.stdout


def test_sql_error_is_one_line(warehouse_dir) -> None:
    assert_one_line_error(
        run_cli("sql", "--warehouse", str(warehouse_dir), "SELECT nope FROM sentences"), "SQL error"
    )


def test_index_reports_every_vector_table_and_builds_training_banks(train_warehouse_dir, tmp_path) -> None:
    import shutil

    copy = tmp_path / "wh"
    shutil.copytree(train_warehouse_dir, copy)
    small = run_cli("index", "--warehouse", str(copy), "--run", "test")
    assert small.returncode == 0, small.stderr
    assert "no index needed" in small.stdout and small.stdout.count("\n") == 2  # no bank: a test run
    forced = run_cli(
        "index", "--warehouse", str(copy), "--run", "train", "--min-rows", "256", "--bank-size", "300"
    )
    assert forced.returncode == 0, forced.stderr
    assert "sent_id BTREE, decoding BITMAP built" in forced.stdout
    assert "neighbour bank: decoder bank of run train: 300 states (seeded sample of " in forced.stdout
    assert "neighbour bank: encoder bank of run train: 300 states" in forced.stdout
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["indexes"]["decoder_states__train"]["built"] is True


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--beam", "0"], ("--beam must be at least 1",)),
        (["--topk", "100000"], ("--topk must be between 1 and the vocabulary size",)),
        (["--max-len", "-3"], ("--max-len must be at least 1",)),
        (["--batch-size", "0"], ("--batch-size",)),
    ],
)
def test_bad_decoding_options(tiny_dir, tmp_path, args, needles) -> None:
    proc = run_cli(
        "trace",
        "--model",
        str(tiny_dir),
        "--corpus",
        "task:dates:test:3",
        "--warehouse",
        str(tmp_path / "wh"),
        "--device",
        "cpu",
        *args,
    )
    assert_one_line_error(proc, *needles)


def test_missing_model_and_foreign_warehouse(tmp_path) -> None:
    assert_one_line_error(
        run_cli(
            "trace",
            "--model",
            str(tmp_path / "none"),
            "--corpus",
            "task:dates:test:3",
            "--warehouse",
            str(tmp_path / "wh"),
            "--device",
            "cpu",
        ),
        "no such model directory",
    )
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.csv").write_text("x\n")
    assert_one_line_error(
        run_cli("sql", "--warehouse", str(tmp_path / "foreign"), "SELECT 1"), "not a beamscope warehouse"
    )


def test_errors_json_numbers_are_numbers(warehouse_dir) -> None:
    proc = run_cli("errors", "--warehouse", str(warehouse_dir), "--run", "beam4", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    buckets = json.loads(proc.stdout)["buckets"]
    assert buckets and all(isinstance(b["ref_tokens"], int) for b in buckets)  # not a DECIMAL's string
    assert all(isinstance(b["f_measure"], float) for b in buckets if b["f_measure"] is not None)
