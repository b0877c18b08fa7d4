"""``beamscope perturb``: a new run of the variants under the original sent_ids; skips recorded;
bad input is one line and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from beamscope.cli import main
from tests.helpers import trace_run
from warehouse import open_warehouse
from warehouse.perturbations import perturbation_summary


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_dir) -> tuple[Path, Path]:
    """A copy of the tiny model and a warehouse with one run of it (24 dates)."""
    base = tmp_path_factory.mktemp("perturb")
    model = base / "model"
    shutil.copytree(tiny_dir, model)
    root = base / "wh"
    trace_run(model, "task:dates:test:24", root, "r", vectors=False)
    return model, root


def _perturb(capsys: pytest.CaptureFixture, root: Path, *args: str) -> tuple[int, str, str]:
    """``beamscope perturb`` of run 'r' in-process: exit code, stdout, stderr."""
    argv = ["perturb", "--warehouse", str(root), "--run", "r", "--device", "cpu", *args]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, *capsys.readouterr()


def _runs(root: Path) -> set[str]:
    return set(json.loads((root / "manifest.json").read_text())["runs"])


def test_perturb_writes_a_run_of_the_original_sent_ids(wh, capsys) -> None:
    _, root = wh
    code, out, err = _perturb(capsys, root, "--kind", "case")
    assert code == 0, err
    with open_warehouse(root) as w:
        orig = w.sql("SELECT sent_id, source FROM sentences WHERE run_id = 'r'")
        var = w.sql("SELECT sent_id, source, reference FROM sentences WHERE run_id = 'r.perturb-case'")
        skipped = w.sql("SELECT sent_id, reason FROM skipped WHERE run_id = 'r.perturb-case'")
        row = w.sql("SELECT corpus, options FROM runs WHERE run_id = 'r.perturb-case'").row(0, named=True)
        summary = perturbation_summary(w, "r.perturb-case")
    sources = dict(orig.iter_rows())
    assert sorted([*var["sent_id"], *skipped["sent_id"]]) == sorted(sources)
    assert all(s == sources[i].upper() or s == sources[i].lower() for i, s, _ in var.iter_rows())
    assert skipped.height > 0 and set(skipped["reason"]) == {"case: no cased letters"}
    assert not any(c.isalpha() for i in skipped["sent_id"] for c in sources[i])
    assert row["corpus"] == "perturb:case:r"
    assert json.loads(row["options"])["perturbation"] == {
        "of": "r",
        "kind": "case",
        "expect": "same",
        "where": "all",
    }
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(f"run r.perturb-case: case of r (expect same): {var.height} sentences")
    )
    assert summary["n"] == var.height and summary["n_skipped"] == skipped.height


def test_where_and_run_name(wh, capsys) -> None:
    _, root = wh
    code, _, err = _perturb(
        capsys, root, "--kind", "reformat", "--where", "sent_id < 5", "--run-name", "ref5"
    )
    assert code == 0, err
    with open_warehouse(root) as w:
        var = w.sql(
            "SELECT v.sent_id, v.reference = o.reference AS same_ref FROM sentences v "
            "JOIN sentences o USING (sent_id) WHERE v.run_id = 'ref5' AND o.run_id = 'r'"
        )
    assert sorted(var["sent_id"]) == [0, 1, 2, 3, 4] and all(var["same_ref"])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--kind", "nope"], ["invalid choice: 'nope'"]),
        (["--kind", "plus_one"], ["--kind plus_one applies to runs of the numbers task", "'r'"]),
        (["--kind", "case", "--where", "sent_id IN (SELECT 1 FROM read_csv('/etc/passwd'))"], ["refused"]),
        (["--kind", "case", "--where", "no_such_column > 1"], ["no_such_column"]),
        (["--kind", "case", "--where", "sent_id > 1000"], ["has no sentence of run 'r'"]),
        (["--kind", "case", "--run", "nope"], ["no complete run 'nope'"]),
        (["--kind", "drop", "--where", "sent_id = 0 AND false"], ["has no sentence"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(wh, args, needles, capsys) -> None:
    _, root = wh
    before = _runs(root)
    code, _, err = _perturb(capsys, root, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    assert _runs(root) == before


def test_changed_or_missing_model_is_refused(wh, tmp_path, capsys) -> None:
    model, root = wh
    backup = tmp_path / "model"
    shutil.copytree(model, backup)
    before = _runs(root)
    try:
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-4] + b"\1\1\1\1")
        for needle in ("not the model that traced run 'r'", "no such model directory"):
            code, _, err = _perturb(capsys, root, "--kind", "drop")
            assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
            shutil.rmtree(model, ignore_errors=True)
        assert _runs(root) == before
    finally:
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(backup, model)
