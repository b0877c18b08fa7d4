"""Perturbation kinds: deterministic per (kind, sent_id), and each does what it says."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from pipeline.perturb import KINDS, NotApplicable, check_applies, variant, variants
from pipeline.tasks import TASKS, dates, generate, numbers
from schemas import ConfigError

RNG = random.Random(0)


def test_generic_kinds_change_words() -> None:
    src = "Friday 5th March 2021"
    dropped, _ = KINDS["drop"].make(src, None, random.Random(1))
    assert len(dropped.split()) == 3 and set(dropped.split()) < set(src.split())
    dup, _ = KINDS["duplicate"].make(src, None, random.Random(1))
    words = dup.split()
    assert len(words) == 5 and any(words[i] == words[i + 1] for i in range(4))
    swapped, _ = KINDS["swap"].make(src, None, random.Random(1))
    assert sorted(swapped.split()) == sorted(src.split()) and swapped != src
    assert KINDS["case"].make("Mar 5, 2021", None, RNG)[0] == "MAR 5, 2021"
    assert KINDS["case"].make("MAR 05 2021", None, RNG)[0] == "mar 05 2021"
    assert KINDS["punct"].make("Mar. 5, '21", None, RNG)[0] == "Mar 5 21"
    assert KINDS["punct"].make("5. März 2021", None, RNG)[0] == "5 März 2021"
    assert KINDS["punct"].make("twenty-four", None, RNG)[0] == "twentyfour"


@pytest.mark.parametrize(
    ("kind", "source", "why"),
    [
        ("drop", "20210305", "1 word: nothing to drop"),
        ("swap", "20210305", "1 word: nothing to swap"),
        ("swap", "no no", "no two adjacent words differ"),
        ("case", "05/03/21", "no cased letters"),
        ("punct", "05/03/21", "no punctuation outside numbers"),
        ("plus_one", "twenty four", "not a number written as the numbers task"),
    ],
)
def test_a_kind_that_cannot_apply_says_why(kind, source, why) -> None:
    with pytest.raises(NotApplicable, match=why):
        KINDS[kind].make(source, None, RNG)


def test_variants_are_deterministic_and_keep_sent_ids() -> None:
    rows = [
        {"sent_id": i, "source": s, "reference": t}
        for i, (s, t) in enumerate(generate(TASKS["dates"], "test", 40))
    ]
    for kind in ("drop", "duplicate", "swap", "case", "punct", "reformat"):
        first, skips = variants(KINDS[kind], rows, "dates")
        again, _ = variants(KINDS[kind], rows, "dates")
        assert first == again and [e.sent_id for e in first] == list(range(40))
        changed = [e for e in first if e.sent_id not in skips]
        assert changed and all(e.source != rows[e.sent_id]["source"] for e in changed)


def test_dates_reformat_keeps_the_iso_answer() -> None:
    for i, (src, iso) in enumerate(generate(TASKS["dates"], "test", 60)):
        ex = variant(KINDS["reformat"], i, src, iso, "dates")
        assert ex.source != src and ex.reference == iso
        date = dt.date.fromisoformat(iso)
        assert any(f(date) == ex.source for f in dates.FORMATS.values())
    with pytest.raises(NotApplicable, match="not its reference's date"):
        KINDS["reformat"].make("March 6, 2021", "2021-03-05", RNG)


def test_numbers_plus_and_minus_one_give_the_tasks_targets() -> None:
    for i, (src, tgt) in enumerate(generate(TASKS["numbers"], "test", 60)):
        n = numbers.parse_english(src)
        assert numbers.pair(n) == (src, tgt)
        plus = variant(KINDS["plus_one"], i, src, tgt, "numbers")
        assert (plus.source, plus.reference) == (
            numbers.english(n + 1),
            "".join(numbers.german_pieces(n + 1)),
        )
        if n > 1:
            minus = variant(KINDS["minus_one"], i, src, tgt, "numbers")
            assert numbers.parse_english(minus.source) == n - 1 and minus.reference == numbers.pair(n - 1)[1]
    assert variant(KINDS["plus_one"], 0, "twenty-nine", None, "numbers").reference == "dreißig"
    with pytest.raises(NotApplicable, match="0 is outside the task's numbers"):
        KINDS["minus_one"].make("one", "eins", RNG)
    with pytest.raises(NotApplicable, match="1000000 is outside"):
        KINDS["plus_one"].make(numbers.english(numbers.HIGHEST), None, RNG)


def test_expectations_and_references() -> None:
    assert variant(KINDS["case"], 0, "Mar 5, 2021", "2021-03-05", "dates").reference == "2021-03-05"
    assert variant(KINDS["case"], 0, "Mar 5, 2021", "2021-03-05", None).reference is None  # a file corpus
    assert variant(KINDS["drop"], 0, "Mar 5, 2021", "2021-03-05", "dates").reference is None
    assert [KINDS[k].expect("dates") for k in ("drop", "case", "reformat")] == [None, "same", "same"]
    assert KINDS["plus_one"].expect("numbers") == "change" and KINDS["punct"].expect(None) is None


def test_task_kinds_are_refused_elsewhere() -> None:
    check_applies(KINDS["reformat"], "r", "task:dates:test:10")
    check_applies(KINDS["case"], "r", "corpus.tsv")
    for kind, corpus in (("plus_one", "task:dates:test:10"), ("reformat", "corpus.tsv")):
        with pytest.raises(ConfigError, match=f"--kind {kind} applies to runs of the"):
            check_applies(KINDS[kind], "r", corpus)
