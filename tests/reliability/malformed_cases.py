"""The malformed inputs of ``test_malformed.py``: ``CASES`` maps an id to a function that builds
the bad input under a scratch directory and returns the argv and the expected stderr line (a
string: exact; a compiled pattern: full match). The corpora and checkpoints are here; the
warehouses and options in ``malformed_stores`` (importing it registers them)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

Expect = str | re.Pattern[str]
Case = Callable[[Path, Path, Path], tuple[list[str], Expect]]  # (scratch, model, warehouse) -> ...
CASES: dict[str, Case] = {}
GOOD = b"5.3.21\t2021-03-05\n"


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def _trace(model: Path, corpus: Path | str, wh: Path, *extra: str) -> list[str]:
    argv = ["trace", "--model", str(model), "--corpus", str(corpus), "--warehouse", str(wh)]
    return [*argv, "--device", "cpu", "--beam", "2", "--max-len", "12", *extra]


def _file(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d / name


def _corpus_case(name: str, data: bytes, message: str) -> None:
    """A corpus file ``name`` holding ``data``; ``message`` is the error after 'PATH'."""

    @case(f"corpus-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        path = _file(d, name, data)
        return _trace(model, path, d / "out"), f"{path}{message}"


# -- corpora --------------------------------------------------------------------------------------
_corpus_case("latin1.txt", b"5.3.21\nM\xe4rz 2021\n", ":2: not UTF-8 (byte 2)")
_corpus_case("utf16.txt", "5.3.21\n".encode("utf-16"), ":1: UTF-16 text (byte-order mark); save it as UTF-8")
_corpus_case(
    "mac-cr.txt", b"5.3.21\r6.3.21\r", ":1: carriage return inside a line (use LF or CRLF line ends)"
)
_corpus_case("nul.txt", b"5.3.21\n6.3\x00.21\n", ":2: NUL byte in line")
_corpus_case("empty.txt", b"", ": empty corpus: no sentences")
_corpus_case("newlines-only.txt", b"\n\n", ":1: empty line")
_corpus_case("whitespace-line.txt", b"5.3.21\n \t \n6.3.21\n", ":2: empty line")
_corpus_case("trailing-blank-line.txt", b"5.3.21\n6.3.21\n\n", ":3: empty line")
_corpus_case(
    "huge-line.txt", b"5.3.21\n" + b"7" * ((1 << 20) + 1) + b"\n", ":2: line longer than 1048576 bytes"
)
_corpus_case("three-columns.tsv", GOOD + b"a\tb\tc\n", ":2: expected 1 or 2 tab-separated columns, found 3")
_corpus_case(
    "quoted-over-two-lines.tsv",
    GOOD + b'"5 March\n2021"\t2021-03-05\n',
    ":2: a quoted field goes on over the line end (CSV quoting?); TSV here has one pair a line",
)
_corpus_case(
    "csv-escaped-quotes.tsv",
    GOOD + b'"He said ""5.3.21"""\t2021-03-05\n',
    ':2: CSV-style quoted field ("" inside "..."); TSV fields here are not quoted',
)
_corpus_case("empty-source.tsv", GOOD + b"\t2021-03-05\n", ":2: empty source")
_corpus_case("empty-reference.tsv", GOOD + b"5.3.21\t \n", ":2: empty reference")
_corpus_case("crlf-bad-utf8.tsv", GOOD.replace(b"\n", b"\r\n") + b"\xff\t2021\r\n", ":2: not UTF-8 (byte 1)")
_corpus_case("invalid.jsonl", b'{"source": "5.3.21"}\n{"source": \n', ":2: invalid JSON (Expecting value)")
_corpus_case("wrong-field.jsonl", b'{"src": "5.3.21"}\n', ':1: expected an object with a string "source"')
_corpus_case("array-line.jsonl", b'["5.3.21"]\n', ':1: expected an object with a string "source"')
_corpus_case("null-source.jsonl", b'{"source": null}\n', ':1: expected an object with a string "source"')
_corpus_case(
    "number-reference.jsonl",
    b'{"source": "5.3.21", "reference": 20210305}\n',
    ':1: "reference" must be a string',
)
_corpus_case(
    "format.csv",
    b"source,reference\n5.3.21,2021-03-05\n",
    ": unknown corpus format (use .txt, .tsv, .jsonl or .parquet)",
)


def _parquet_case(name: str, table: pa.Table, message: str) -> None:
    @case(f"corpus-{name}.parquet")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        path = d / f"{name}.parquet"
        pq.write_table(table, path)
        return _trace(model, path, d / "out"), f"{path}{message}"


_parquet_case("int-source", pa.table({"source": [1, 2]}), ': column "source" must be strings, not int64')
_parquet_case(
    "int-reference",
    pa.table({"source": ["5.3.21"], "reference": [20210305]}),
    ': column "reference" must be strings, not int64',
)
_parquet_case("no-source-column", pa.table({"text": ["5.3.21"]}), ': Parquet corpus needs a "source" column')
_parquet_case("null-source", pa.table({"source": ["5.3.21", None]}), ":2: null source")


@case("corpus-truncated.parquet")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    path = d / "truncated.parquet"
    pq.write_table(pa.table({"source": ["5.3.21"] * 50}), path)
    path.write_bytes(path.read_bytes()[:-20])
    return _trace(model, path, d / "out"), re.compile(re.escape(f"{path}: unreadable Parquet (") + r".+\)")


@case("corpus-missing-file")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    return _trace(model, d / "nope.txt", d / "out"), f"{d / 'nope.txt'}: no such corpus file"


@case("corpus-directory")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    (d / "dir.txt").mkdir()
    return _trace(model, d / "dir.txt", d / "out"), f"{d / 'dir.txt'}: no such corpus file"


def _refs_case(name: str, src: bytes, refs: bytes | None, message: Callable[[Path, Path], str]) -> None:
    @case(f"refs-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        path = _file(d, "src.txt", src) if not name.startswith("tsv") else _file(d, "src.tsv", src)
        ref = d / "refs.txt"
        if refs is not None:
            ref.write_bytes(refs)
        return _trace(model, path, d / "out", "--refs", str(ref)), message(path, ref)


_refs_case("fewer", b"5.3.21\n6.3.21\n", b"2021-03-05\n", lambda s, r: f"{r}:2: 1 references for 2 sources")
_refs_case(
    "more", b"5.3.21\n", b"2021-03-05\n2021-03-06\n", lambda s, r: f"{r}:2: 2 references for 1 sources"
)
_refs_case("empty-line", b"5.3.21\n6.3.21\n", b"2021-03-05\n\n", lambda s, r: f"{r}:2: empty reference")
_refs_case("missing", b"5.3.21\n", None, lambda s, r: f"{r}: no such reference file")
_refs_case("tsv-with-refs", GOOD, b"2021-03-05\n", lambda s, r: f"{s}: --refs applies to .txt corpora only")


def _task_case(spec: str, message: str) -> None:
    @case(f"task-{spec}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        return _trace(model, spec, d / "out"), message


_task_case("task:poems:test", "unknown task 'poems'; built-in tasks: dates, numbers")
_task_case("task:dates:dev", "unknown split 'dev' in 'task:dates:dev'; splits: train, valid, test")
_task_case("task:dates:test:abc", "bad sentence count 'abc' in 'task:dates:test:abc'")
_task_case("task:dates:test:-5", "sentence count must be positive in 'task:dates:test:-5'")


# -- checkpoints ----------------------------------------------------------------------------------
def _ckpt_case(name: str, damage: Callable[[Path], Expect]) -> None:
    @case(f"checkpoint-{name}")
    def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
        ckpt = d / "model"
        shutil.copytree(model, ckpt)
        expect = damage(ckpt)
        return _trace(ckpt, "task:dates:test:3", d / "out"), expect


def _edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


_WEIGHTS_UNREADABLE = r": unreadable weights \(.+\)"
_MISMATCH = ": weights do not match config.json (arch "
_ckpt_case(
    "truncated-safetensors",
    lambda c: re.compile(re.escape(str(_truncate(c / "model.safetensors"))) + _WEIGHTS_UNREADABLE),
)
_ckpt_case(
    "empty-safetensors",
    lambda c: re.compile(re.escape(str(_truncate(c / "model.safetensors", 0))) + _WEIGHTS_UNREADABLE),
)
_ckpt_case(
    "config-of-another-arch",
    lambda c: (
        _edit_json(c / "config.json", lambda j: j.update(arch="lstm", model={"d_model": 32})),
        f"{c / 'model.safetensors'}{_MISMATCH}'lstm'): missing encoder.weight_ih_l0, encoder.weight_hh_l0, "
        "encoder.bias_ih_l0, ... (17 in all); not in the network dec.0.cross.k.bias, dec.0.cross.k.weight, "
        "dec.0.cross.o.bias, ... (88 in all); other shapes: src_emb.weight is [67, 32] in the file, [67, 64] "
        "in the network (and 1 more)",
    )[1],
)
_ckpt_case(
    "config-other-sizes",
    lambda c: (
        _edit_json(c / "config.json", lambda j: j["model"].update(d_model=64)),
        f"{c / 'model.safetensors'}{_MISMATCH}'transformer'): other shapes: src_emb.weight is "
        "[67, 32] in the "
        "file, [67, 64] in the network (and 86 more)",
    )[1],
)
_ckpt_case(
    "config-unknown-arch",
    lambda c: (
        _edit_json(c / "config.json", lambda j: j.update(arch="gru")),
        f"{c / 'config.json'}: unknown architecture 'gru'",
    )[1],
)
_ckpt_case(
    "config-misspelt-size",
    lambda c: (
        _edit_json(c / "config.json", lambda j: j["model"].update(d_modle=32)),
        re.compile(
            re.escape(f"{c / 'config.json'}: config does not fit arch 'transformer': ") + ".*d_modle.*"
        ),
    )[1],
)
_ckpt_case(
    "config-not-json",
    lambda c: (
        (c / "config.json").write_text("{not json"),
        f"{c / 'config.json'}: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
    )[1],
)
_ckpt_case(
    "config-foreign",
    lambda c: (
        (c / "config.json").write_text('{"hello": 1}'),
        f'{c / "config.json"}: not a beamscope checkpoint (config.json has no "format": "beamscope-model") '
        'nor a Hugging Face model (no "model_type")',
    )[1],
)
_ckpt_case(
    "vocabulary-missing",
    lambda c: ((c / "tgt_vocab.json").unlink(), f"{c}: incomplete checkpoint: tgt_vocab.json is missing")[1],
)
_ckpt_case(
    "vocabulary-not-an-object",
    lambda c: (
        (c / "src_vocab.json").write_text("[1, 2]"),
        f"{c / 'src_vocab.json'}: expected a JSON object",
    )[1],
)
_ckpt_case(
    "vocabulary-without-tokens",
    lambda c: (
        (c / "tgt_vocab.json").write_text('{"mode": "char"}'),
        f"{c}: malformed vocabulary ('tokens')",
    )[1],
)
_ckpt_case(
    "vocabulary-of-another-size",
    lambda c: (
        _edit_json(c / "tgt_vocab.json", lambda j: j["tokens"].append("extra")),
        f"{c / 'model.safetensors'}{_MISMATCH}'transformer'): other shapes: tgt_emb.weight is "
        "[15, 32] in the "
        "file, [16, 32] in the network (and 2 more)",
    )[1],
)


@case("checkpoint-missing-directory")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    return _trace(d / "nope", "task:dates:test:3", d / "out"), f"{d / 'nope'}: no such model directory"


@case("checkpoint-empty-directory")
def _(d: Path, model: Path, wh: Path) -> tuple[list[str], Expect]:
    (d / "empty").mkdir()
    return _trace(
        d / "empty", "task:dates:test:3", d / "out"
    ), f"{d / 'empty'}: not a model directory (no config.json)"
