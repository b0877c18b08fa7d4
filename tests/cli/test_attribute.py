"""``beamscope attribute`` from the command line: it writes, and bad input is one line, nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from beamscope.cli import main
from tests.helpers import assert_one_line_error, run_cli, trace_run


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_dir) -> tuple[Path, Path]:
    """A copy of the tiny model and a warehouse with one run of it (12 sentences)."""
    base = tmp_path_factory.mktemp("attribute")
    model = base / "model"
    shutil.copytree(tiny_dir, model)
    root = base / "wh"
    trace_run(model, "task:dates:test:12", root, "r", vectors=False)
    return model, root


def _attributed(root: Path) -> bool:
    return (root / "tables" / "attribution").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--method", "nope"], ["invalid choice: 'nope'"]),
        (["--steps", "0"], ["--steps must be at least 1"]),
        (["--where", "exact_match; DROP TABLE sentences"], ["SQL error"]),
        (["--where", "sent_id IN (SELECT 1 FROM read_csv('/etc/passwd'))"], ["refused"]),
        (["--where", "no_such_column > 1"], ["no_such_column"]),
        (["--where", "sent_id > 1000"], ["has no sentence of run 'r'"]),
        (["--run", "nope"], ["no complete run 'nope'"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(wh, args, needles, capsys) -> None:
    """In-process (the command's own code path, without an interpreter start per case)."""
    _, root = wh
    argv = ["attribute", "--warehouse", str(root), "--run", "r", "--device", "cpu", *args]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    assert not _attributed(root)


def test_changed_or_missing_model_is_refused(wh, tmp_path) -> None:
    model, root = wh
    backup = tmp_path / "model"
    shutil.copytree(model, backup)
    try:
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-4] + b"\1\1\1\1")
        argv = ["attribute", "--warehouse", str(root), "--run", "r", "--device", "cpu"]
        assert_one_line_error(run_cli(*argv), "not the model that traced run 'r'", str(model))
        shutil.rmtree(model)
        assert_one_line_error(run_cli(*argv), "no such model directory", str(model))
        assert not _attributed(root)
    finally:
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(backup, model)


def test_attribute_then_sql_reads_it(wh) -> None:
    _, root = wh
    where = "NOT exact_match OR sent_id < 3"
    proc = run_cli("attribute", "--warehouse", str(root), "--run", "r", "--steps", "8", "--where", where)
    assert proc.returncode == 0, proc.stderr
    assert "run r: ig attribution of" in proc.stdout
    assert re.search(r"ig convergence: median \|delta\| is \d+\.\d% of .* \((NOT )?converged", proc.stdout)
    query = (
        "SELECT count(DISTINCT a.sent_id) AS n, "
        "max(abs(s.total - (t.logprob - t.baseline_logprob) - t.delta)) AS gap FROM attribution_steps t "
        "JOIN (SELECT run_id, sent_id, step, sum(score) AS total FROM attribution GROUP BY ALL) s "
        "USING (run_id, sent_id, step) JOIN attribution a USING (run_id, sent_id, step)"
    )
    out = run_cli("sql", "--warehouse", str(root), "--format", "csv", query)
    assert out.returncode == 0, out.stderr
    n, gap = out.stdout.splitlines()[1].split(",")
    assert int(n) >= 3 and float(gap) < 1e-4
