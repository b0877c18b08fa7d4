"""Corpora: built-in task splits and user files (.txt [+ references], .tsv, .jsonl, .parquet).

Every problem is a ``CorpusError`` naming the file and line: nothing of a corpus is dropped
silently. Lines too long for a model are not decided here; ``trace`` records them as skips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tasks import SPLITS, generate, get_task
from schemas import CorpusError

MAX_LINE_BYTES = 1 << 20  # a line longer than 1 MiB is refused outright


@dataclass(frozen=True)
class Example:
    """One sentence to trace; ``file``/``line`` say where it came from (line is 1-based)."""

    sent_id: int
    source: str
    reference: str | None
    file: str
    line: int


@dataclass(frozen=True)
class Corpus:
    spec: str  # as the user wrote it, recorded in runs.corpus
    split: str
    examples: list[Example]

    def fingerprint(self) -> str:
        """A hash of the sources and references (recorded in ``runs.options.corpus_hash``)."""
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(f"{ex.source}\x00{ex.reference}\x01".encode())
        return h.hexdigest()[:16]


def read_corpus(spec: str, refs: str | None = None, split: str = "test") -> Corpus:
    """Read ``spec``: ``task:NAME:SPLIT[:N]`` or a file path (format by extension)."""
    if spec.startswith("task:"):
        if refs:
            raise CorpusError("--refs applies to .txt corpora, not to built-in tasks")
        return _task_corpus(spec)
    path = Path(spec)
    if not path.is_file():
        raise CorpusError("no such corpus file", path=spec)
    suffix = path.suffix.lower()
    if refs and suffix != ".txt":
        raise CorpusError("--refs applies to .txt corpora only", path=spec)
    if suffix == ".txt":
        examples = _txt(path, Path(refs) if refs else None)
    elif suffix == ".tsv":
        examples = _tsv(path)
    elif suffix == ".jsonl":
        examples = _jsonl(path)
    elif suffix == ".parquet":
        examples = _parquet(path)
    else:
        raise CorpusError("unknown corpus format (use .txt, .tsv, .jsonl or .parquet)", path=spec)
    if not examples:
        raise CorpusError("empty corpus: no sentences", path=spec)
    return Corpus(spec, split, examples)


def _task_corpus(spec: str) -> Corpus:
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise CorpusError(f"bad task spec {spec!r}; use task:NAME:SPLIT[:N], e.g. task:dates:test:2000")
    task = get_task(parts[1])
    split = parts[2]
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r} in {spec!r}; splits: {', '.join(SPLITS)}")
    default = dict(zip(SPLITS, task.default_sizes, strict=True))[split]
    try:
        n = int(parts[3]) if len(parts) == 4 else default
    except ValueError:
        raise CorpusError(f"bad sentence count {parts[3]!r} in {spec!r}") from None
    if n < 1:
        raise CorpusError(f"sentence count must be positive in {spec!r}")
    pairs = generate(task, split, n)
    examples = [Example(i, s, t, spec, i + 1) for i, (s, t) in enumerate(pairs)]
    return Corpus(spec, split, examples)


def _lines(path: Path) -> list[str]:
    """Decode ``path`` as UTF-8 lines (BOM and CRLF tolerated); refuse what would lose data."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CorpusError("UTF-16 text (byte-order mark); save it as UTF-8", path=str(path), line=1)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for no, raw in enumerate(lines, 1):
        raw = raw.removesuffix(b"\r")
        if len(raw) > MAX_LINE_BYTES:
            raise CorpusError(f"line longer than {MAX_LINE_BYTES} bytes", path=str(path), line=no)
        if b"\x00" in raw:
            raise CorpusError("NUL byte in line", path=str(path), line=no)
        if b"\r" in raw:  # old Mac line ends would silently merge every line into one sentence
            raise CorpusError(
                "carriage return inside a line (use LF or CRLF line ends)", path=str(path), line=no
            )
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise CorpusError(f"not UTF-8 (byte {e.start + 1})", path=str(path), line=no) from None
    return out


def _text(value: str, path: Path, line: int, what: str) -> str:
    if not value.strip():
        raise CorpusError(f"empty {what}", path=str(path), line=line)
    return value


def _txt(path: Path, refs: Path | None) -> list[Example]:
    sources = _lines(path)
    references: list[str | None] = [None] * len(sources)
    if refs is not None:
        if not refs.is_file():
            raise CorpusError("no such reference file", path=str(refs))
        ref_lines = _lines(refs)
        if len(ref_lines) != len(sources):
            raise CorpusError(
                f"{len(ref_lines)} references for {len(sources)} sources",
                path=str(refs),
                line=min(len(ref_lines), len(sources)) + 1,
            )
        references = [_text(r, refs, i, "reference") for i, r in enumerate(ref_lines, 1)]
    return [
        Example(i - 1, _text(s, path, i, "line"), r, str(path), i)
        for i, (s, r) in enumerate(zip(sources, references, strict=True), 1)
    ]


def _tsv(path: Path) -> list[Example]:
    out = []
    lines = _lines(path)
    for i, line in enumerate(lines, 1):
        cols = line.split("\t")
        if len(cols) > 2:
            raise CorpusError(
                f"expected 1 or 2 tab-separated columns, found {len(cols)}", path=str(path), line=i
            )
        _no_csv_quoting(cols, lines[i] if i < len(lines) else None, path, i)
        ref = _text(cols[1], path, i, "reference") if len(cols) == 2 else None
        out.append(Example(i - 1, _text(cols[0], path, i, "source"), ref, str(path), i))
    return out


def _no_csv_quoting(cols: list[str], next_line: str | None, path: Path, line: int) -> None:
    """Refuse the two shapes CSV writers give a TSV (quotes are otherwise plain text here): a field
    wrapped in quotes with doubled quotes inside, and a quoted field that goes on over a line end."""
    for col in cols:
        if len(col) > 1 and col[0] == col[-1] == '"' and '""' in col[1:-1]:
            raise CorpusError(
                'CSV-style quoted field ("" inside "..."); TSV fields here are not quoted',
                path=str(path),
                line=line,
            )
    last = cols[-1]
    if next_line is not None and last.startswith('"') and last.count('"') % 2:
        first = next_line.split("\t")[0]
        if first.count('"') % 2 and first.rstrip().endswith('"'):
            raise CorpusError(
                "a quoted field goes on over the line end (CSV quoting?); TSV here has one pair a line",
                path=str(path),
                line=line,
            )


def _jsonl(path: Path) -> list[Example]:
    out = []
    for i, line in enumerate(_lines(path), 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"invalid JSON ({e.msg})", path=str(path), line=i) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("source"), str):
            raise CorpusError('expected an object with a string "source"', path=str(path), line=i)
        ref = obj.get("reference")
        if ref is not None and not isinstance(ref, str):
            raise CorpusError('"reference" must be a string', path=str(path), line=i)
        ref = None if ref is None else _text(ref, path, i, "reference")
        out.append(Example(i - 1, _text(obj["source"], path, i, "source"), ref, str(path), i))
    return out


def _parquet(path: Path) -> list[Example]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(f"unreadable Parquet ({e})", path=str(path)) from None
    for col, required in (("source", True), ("reference", False)):
        if col not in table.column_names:
            if required:
                raise CorpusError('Parquet corpus needs a "source" column', path=str(path))
            continue
        if not pa.types.is_string(table[col].type) and not pa.types.is_large_string(table[col].type):
            raise CorpusError(f'column "{col}" must be strings, not {table[col].type}', path=str(path))
    sources = table["source"].to_pylist()
    refs = table["reference"].to_pylist() if "reference" in table.column_names else [None] * len(sources)
    out = []
    for i, (s, r) in enumerate(zip(sources, refs, strict=True), 1):
        if s is None:
            raise CorpusError("null source", path=str(path), line=i)
        out.append(
            Example(
                i - 1,
                _text(s, path, i, "source"),
                r if r is None else _text(r, path, i, "reference"),
                str(path),
                i,
            )
        )
    return out
