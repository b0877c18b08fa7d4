"""Corpora: every format reads, every bad input fails with file and line, long lines are skipped."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.corpus import read_corpus
from schemas import CorpusError
from tests.helpers import assert_one_line_error, run_cli


def test_task_spec_reads_n_sentences() -> None:
    c = read_corpus("task:dates:test:7")
    assert len(c.examples) == 7 and c.split == "test"
    assert [e.sent_id for e in c.examples] == list(range(7))
    assert all(e.reference for e in c.examples)


def test_every_file_format_reads(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("\ufeffMarch 5, 2021\r\n5.3.21\r\n", encoding="utf-8")
    (tmp_path / "a.ref").write_text("2021-03-05\n2021-03-05\n")
    (tmp_path / "a.tsv").write_text("March 5, 2021\t2021-03-05\n5.3.21\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"source": "5.3.21", "reference": "2021-03-05"}) + "\n")
    pq.write_table(pa.table({"source": ["5.3.21"], "reference": ["2021-03-05"]}), tmp_path / "a.parquet")
    txt = read_corpus(str(tmp_path / "a.txt"), str(tmp_path / "a.ref"))
    assert [(e.source, e.reference) for e in txt.examples] == [
        ("March 5, 2021", "2021-03-05"),
        ("5.3.21", "2021-03-05"),
    ]
    tsv = read_corpus(str(tmp_path / "a.tsv"))
    assert [e.reference for e in tsv.examples] == ["2021-03-05", None]
    assert read_corpus(str(tmp_path / "a.jsonl")).examples[0].reference == "2021-03-05"
    assert read_corpus(str(tmp_path / "a.parquet")).examples[0].source == "5.3.21"


BAD = [
    ("empty.txt", b"", None, "empty corpus", None),
    ("blank.txt", b"5.3.21\n\n6.3.21\n", None, "empty line", 2),
    ("spaces.txt", b"5.3.21\n   \n", None, "empty line", 2),
    ("latin1.txt", b"5.3.21\nM\xe4rz 2021\n", None, "not UTF-8", 2),
    ("nul.txt", b"5.3.21\n6.3\x00.21\n", None, "NUL byte", 2),
    ("refs.txt", b"5.3.21\n6.3.21\n", b"2021-03-05\n", "1 references for 2 sources", 2),
    ("cols.tsv", b"a\tb\tc\n", None, "tab-separated columns", 1),
    ("bad.jsonl", b'{"source": "x"}\n{"source": \n', None, "invalid JSON", 2),
    ("fields.jsonl", b'{"src": "x"}\n', None, '"source"', 1),
    ("format.csv", b"a,b\n", None, "unknown corpus format", None),
]


@pytest.mark.parametrize("name,data,refs,message,line", BAD, ids=[b[0] for b in BAD])
def test_bad_corpora_name_file_and_line(tmp_path, name, data, refs, message, line) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    ref_path = None
    if refs is not None:
        ref_path = tmp_path / "refs.ref"
        ref_path.write_bytes(refs)
    with pytest.raises(CorpusError, match=message) as err:
        read_corpus(str(path), str(ref_path) if ref_path else None)
    if line is not None:
        assert err.value.line == line
        assert f":{line}: " in str(err.value)


def test_parquet_with_wrong_types_is_refused(tmp_path) -> None:
    pq.write_table(pa.table({"source": [1, 2]}), tmp_path / "bad.parquet")
    with pytest.raises(CorpusError, match='"source" must be strings'):
        read_corpus(str(tmp_path / "bad.parquet"))


def test_unknown_task_and_split() -> None:
    with pytest.raises(CorpusError, match="unknown task"):
        read_corpus("task:poems:test")
    with pytest.raises(CorpusError, match="unknown split"):
        read_corpus("task:dates:dev")


@pytest.mark.parametrize(
    "corpus,needles",
    [
        ("missing.txt", ("missing.txt", "no such corpus file")),
        ("task:poems:test", ("unknown task",)),
        ("latin1.txt", ("latin1.txt:1:", "not UTF-8")),
    ],
)
def test_cli_reports_bad_input_on_one_line(tmp_path, tiny_dir, corpus, needles) -> None:
    (tmp_path / "latin1.txt").write_bytes(b"M\xe4rz\n")
    if not corpus.startswith("task:"):
        corpus = str(tmp_path / corpus)
    proc = run_cli(
        "trace",
        "--model",
        str(tiny_dir),
        "--corpus",
        corpus,
        "--warehouse",
        str(tmp_path / "wh"),
        "--device",
        "cpu",
    )
    assert_one_line_error(proc, *needles)
