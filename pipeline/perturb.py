"""Perturbation kinds: a changed copy (a variant) of each source, and what its output should do.

A kind's variant of a sentence is decided by a random generator seeded with (kind, sent_id), so
it is the same on every machine and every run. Each kind has an expectation on the model's output:

- ``same``: an invariance; the output must not change (the variant's reference is the original's);
- ``change``: the output must change as the task says (the variant's reference is the task's
  target of the changed input);
- None: no expectation; only how often the output changed is reported (no reference).

The generic kinds work on whitespace words (a variant's words are joined by one space) and apply
to any corpus; ``case`` and ``punct`` are invariances on the built-in tasks (a date or number
written in capitals or without punctuation is still the same date or number) and have no
expectation elsewhere. The task-aware kinds apply to their built-in task only. A kind that cannot
make a variant of a sentence raises ``NotApplicable`` with the reason, which the run records.
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.corpus import Example
from pipeline.tasks import dates, numbers
from schemas import ConfigError

Expect = Literal["same", "change"] | None
# a kind's change: (source, original reference, seeded generator) -> (variant source, the variant's
# reference where the kind knows it: the task's target of the changed input)
Make = Callable[[str, str | None, random.Random], tuple[str, str | None]]


class NotApplicable(ValueError):
    """The kind has no variant of this sentence (the message says why)."""


def drop(source: str, _: str | None, rng: random.Random) -> tuple[str, None]:
    """Drop one word."""
    words = _words(source, 2, "drop")
    i = rng.randrange(len(words))
    return " ".join(words[:i] + words[i + 1 :]), None


def duplicate(source: str, _: str | None, rng: random.Random) -> tuple[str, None]:
    """Write one word twice."""
    words = _words(source, 1, "duplicate")
    i = rng.randrange(len(words))
    return " ".join(words[: i + 1] + words[i:]), None


def swap(source: str, _: str | None, rng: random.Random) -> tuple[str, None]:
    """Swap two adjacent words that differ."""
    words = _words(source, 2, "swap")
    pairs = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if not pairs:
        raise NotApplicable("no two adjacent words differ: nothing to swap")
    i = rng.choice(pairs)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words), None


def case(source: str, _: str | None, __: random.Random) -> tuple[str, None]:
    """Upper-case the sentence; a sentence already in upper case is lower-cased instead."""
    if source.upper() != source:
        return source.upper(), None
    if source.lower() != source:
        return source.lower(), None
    raise NotApplicable("no cased letters")


def punct(source: str, _: str | None, __: random.Random) -> tuple[str, None]:
    """Strip punctuation, except a mark between two digits (05/03/21, 1.5: removing it would merge
    two numbers into another one)."""
    kept = [
        ch
        for i, ch in enumerate(source)
        if not unicodedata.category(ch).startswith("P") or _between_digits(source, i)
    ]
    variant = " ".join("".join(kept).split())
    if variant == " ".join(source.split()):
        raise NotApplicable("no punctuation outside numbers")
    if not variant:
        raise NotApplicable("nothing but punctuation")
    return variant, None


def reformat(source: str, reference: str | None, rng: random.Random) -> tuple[str, str | None]:
    """The same date in another of the dates task's formats (the ISO answer stays)."""
    try:
        date = dt.date.fromisoformat(reference or "")
    except ValueError:
        raise NotApplicable(f"reference {reference!r} is not an ISO date") from None
    if not dates.formats_of(source, date):
        raise NotApplicable("the source is not its reference's date in a dates-task format")
    others = sorted({text for f in dates.FORMATS.values() if (text := f(date)) != source})
    return rng.choice(others), reference


def plus_one(source: str, _: str | None, __: random.Random) -> tuple[str, str]:
    """The number + 1 (its German words are the variant's reference)."""
    return _shifted(source, 1)


def minus_one(source: str, _: str | None, __: random.Random) -> tuple[str, str]:
    """The number - 1 (its German words are the variant's reference)."""
    return _shifted(source, -1)


def _words(source: str, least: int, what: str) -> list[str]:
    words = source.split()
    if len(words) < least:
        raise NotApplicable(f"{len(words)} word{'s' * (len(words) != 1)}: nothing to {what}")
    return words


def _between_digits(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def _shifted(source: str, delta: int) -> tuple[str, str]:
    """The numbers task's pair of the source's number + ``delta``."""
    n = numbers.parse_english(source)
    if n is None:
        raise NotApplicable("the source is not a number written as the numbers task writes it")
    if not numbers.LOWEST <= n + delta <= numbers.HIGHEST:
        raise NotApplicable(f"{n + delta} is outside the task's numbers")
    return numbers.pair(n + delta)


@dataclass(frozen=True)
class Kind:
    """A perturbation: how it changes a source, where it applies, what the output should do."""

    name: str
    make: Make
    task: str | None = None  # the one built-in task it applies to; None: any corpus
    on_task: Expect = None  # expectation on a built-in task's corpus
    elsewhere: Expect = None  # expectation on any other corpus

    def expect(self, task: str | None) -> Expect:
        """The expectation on a run of ``task`` (None: not a built-in task's corpus)."""
        return self.on_task if task is not None else self.elsewhere


KINDS: dict[str, Kind] = {
    "drop": Kind("drop", drop),
    "duplicate": Kind("duplicate", duplicate),
    "swap": Kind("swap", swap),
    "case": Kind("case", case, on_task="same"),
    "punct": Kind("punct", punct, on_task="same"),
    "reformat": Kind("reformat", reformat, task="dates", on_task="same"),
    "plus_one": Kind("plus_one", plus_one, task="numbers", on_task="change"),
    "minus_one": Kind("minus_one", minus_one, task="numbers", on_task="change"),
}


def variant(kind: Kind, sent_id: int, source: str, reference: str | None, task: str | None) -> Example:
    """Kind ``kind``'s variant of one sentence of a ``task`` corpus, under the same ``sent_id``; its
    reference follows the kind's expectation (NotApplicable when there is no variant)."""
    text, changed_ref = kind.make(source, reference, random.Random(f"{kind.name}:{sent_id}"))
    expect = kind.expect(task)
    ref = {"same": reference, "change": changed_ref, None: None}[expect]
    return Example(sent_id, text, ref, f"perturb:{kind.name}", sent_id + 1)


def task_of(corpus: str) -> str | None:
    """The built-in task a run's corpus was generated by (None: a file or a perturbation)."""
    parts = corpus.split(":")
    return parts[1] if parts[0] == "task" and len(parts) > 1 else None


def check_applies(kind: Kind, run: str, corpus: str) -> None:
    """ConfigError unless ``kind`` applies to a run over ``corpus``."""
    task = task_of(corpus)
    if kind.task is not None and kind.task != task:
        raise ConfigError(
            f"--kind {kind.name} applies to runs of the {kind.task} task; run {run!r} traced {corpus!r}"
        )


def variants(
    kind: Kind, rows: list[dict[str, Any]], task: str | None
) -> tuple[list[Example], dict[int, str]]:
    """The variant of each row (sent_id, source, reference); where the kind has none the original
    stands in its place, and the second value says why, by sent_id."""
    out, skips = [], {}
    for r in rows:
        try:
            out.append(variant(kind, r["sent_id"], r["source"], r["reference"], task))
        except NotApplicable as e:
            skips[r["sent_id"]] = f"{kind.name}: {e}"
            out.append(Example(r["sent_id"], r["source"], None, f"perturb:{kind.name}", r["sent_id"] + 1))
    return out, skips
