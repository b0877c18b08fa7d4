"""Malformed inputs, each with its exact outcome at the CLI edge: one line on stderr naming the file
(and line), exit code 2 and nothing written; or, where a sentence is only too long for the model, a
counted and recorded skip with every other sentence traced.

The cases are in ``malformed_cases.py`` (corpora, checkpoints) and ``malformed_stores.py``
(warehouses, options).
``beamscope.cli.main`` runs in-process (same code path as the command; no interpreter start per
case).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from beamscope.cli import main
from pipeline.beam import DecodeConfig
from tests.helpers import trace_run
from tests.reliability import malformed_stores  # noqa: F401 (registers the warehouse and option cases)
from tests.reliability.malformed_cases import CASES, GOOD, _file, _trace
from warehouse import open_warehouse


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_wh(tmp_path_factory, tiny_dir) -> Path:
    """One complete run 'r' of 12 sentences in 3 parts."""
    root = tmp_path_factory.mktemp("malformed") / "wh"
    trace_run(
        tiny_dir, "task:dates:test:12", root, "r", DecodeConfig(beam=2, topk=4, max_len=12), part_size=4
    )
    return root


def test_there_are_at_least_thirty_kinds() -> None:
    assert len(CASES) >= 30
    assert {name.split("-")[0] for name in CASES} == {
        "corpus",
        "refs",
        "task",
        "checkpoint",
        "warehouse",
        "option",
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_gives_one_line_naming_the_file(
    name, tmp_path, tiny_dir, tiny, small_wh, capsys
) -> None:
    argv, expect = CASES[name](tmp_path, tiny_dir, small_wh)
    if isinstance(expect, str):
        expect = expect.replace("{vocab}", str(tiny.vocab_size))
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    line = err.removeprefix("beamscope: error: ").rstrip("\n")
    assert err.startswith("beamscope: error: ")
    if isinstance(expect, str):
        assert line == expect
    else:
        assert expect.fullmatch(line), line
    assert out == ""
    assert not (tmp_path / "out").exists(), "a refused trace must not create its warehouse"


def test_accepted_variants_read_exactly(tmp_path) -> None:
    """BOM, CRLF, a missing final newline and a TSV without references are fine, and read exactly."""
    from pipeline.corpus import read_corpus

    f = _file(tmp_path, "a.txt", b"\xef\xbb\xbf5.3.21\r\nFri 5 Mar 2021\r\n6.3.21")
    assert [e.source for e in read_corpus(str(f)).examples] == ["5.3.21", "Fri 5 Mar 2021", "6.3.21"]
    f = _file(tmp_path, "b.tsv", b'5.3.21\n"Quoted" 5.3.21\t2021-03-05\n5"3\n"><svg onload=x>\n"end.\n')
    assert [(e.source, e.reference, e.line) for e in read_corpus(str(f)).examples] == [
        ("5.3.21", None, 1),
        ('"Quoted" 5.3.21', "2021-03-05", 2),
        ('5"3', None, 3),
        ('"><svg onload=x>', None, 4),
        ('"end.', None, 5),
    ]


def test_too_long_source_is_a_counted_recorded_skip(tmp_path, tiny_dir, capsys) -> None:
    corpus = _file(tmp_path, "c.tsv", GOOD + b"7" * 400 + b"\t2021-03-05\n" + b"6.3.21\t2021-03-06\n")
    wh = tmp_path / "wh"
    assert main(_trace(tiny_dir, corpus, wh)) == 0
    assert capsys.readouterr().out.startswith(
        "run dates-transformer.c.test: 3 sentences, 1 skipped (complete)"
    )
    with open_warehouse(wh) as w:
        assert w.sql("SELECT sent_id, source FROM sentences ORDER BY 1").rows() == [
            (0, "5.3.21"),
            (2, "6.3.21"),
        ]
        assert w.sql("SELECT sent_id, file, line, reason FROM skipped").rows() == [
            (1, str(corpus), 2, f"source has 401 tokens; the model takes at most {_max_len(tiny_dir)}")
        ]
        assert w.sql("SELECT n_sentences, n_skipped FROM runs").rows() == [(3, 1)]


def _max_len(model: Path) -> int:
    return json.loads((model / "config.json").read_text())["model"]["max_len"]


def test_cuda_asked_for_without_cuda(tmp_path, tiny_dir, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    assert main(_trace(tiny_dir, "task:dates:test:3", tmp_path / "out", "--device", "cuda")) == 2
    assert (
        capsys.readouterr().err
        == "beamscope: error: device 'cuda' asked for, but CUDA is not available here\n"
    )
