"""The `numbers` task: English number words -> German number words, a reordering translation.

German puts units before tens ("twenty-four" -> "vier|und|zwanzig") and writes one word, so
attention runs backwards inside every two-digit group. Targets are cut into the pieces below
(greedy longest match reproduces the generator's own segmentation, which the tests check).
"""

from __future__ import annotations

import random
import re

EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

DE_UNITS = (
    "null ein zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
    "sechzehn siebzehn achtzehn neunzehn"
).split()
DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()

PIECES: tuple[str, ...] = tuple(sorted({*DE_UNITS[1:], *DE_TENS[2:], "eins", "und", "hundert", "tausend"}))


def english(n: int) -> str:
    """British English words for 1 <= n < 1,000,000 ("three hundred and five")."""
    if n >= 1000:
        head, rest = divmod(n, 1000)
        tail = "" if rest == 0 else (" and " if rest < 100 else " ") + english(rest)
        return f"{english(head)} thousand{tail}"
    if n >= 100:
        head, rest = divmod(n, 100)
        return f"{EN_UNITS[head]} hundred" + (f" and {english(rest)}" if rest else "")
    if n < 20:
        return EN_UNITS[n]
    tens, unit = divmod(n, 10)
    return EN_TENS[tens] + (f"-{EN_UNITS[unit]}" if unit else "")


def german_pieces(n: int, final: bool = True) -> list[str]:
    """German pieces of 1 <= n < 1,000,000; ``final`` says 1 stands alone ("eins")."""
    if n >= 1000:
        head, rest = divmod(n, 1000)
        return german_pieces(head, final=False) + ["tausend"] + (german_pieces(rest) if rest else [])
    if n >= 100:
        head, rest = divmod(n, 100)
        return [DE_UNITS[head], "hundert"] + (german_pieces(rest) if rest else [])
    if n == 1:
        return ["eins" if final else "ein"]
    if n < 20:
        return [DE_UNITS[n]]
    tens, unit = divmod(n, 10)
    return ([DE_UNITS[unit], "und"] if unit else []) + [DE_TENS[tens]]


LOWEST, HIGHEST = 1, 999_999  # the numbers the task writes


def pair(n: int) -> tuple[str, str]:
    """The task's (English, German) pair of ``n``."""
    return english(n), "".join(german_pieces(n))


def parse_english(text: str) -> int | None:
    """The n whose ``english(n)`` is ``text``; None when ``text`` is no source of this task."""
    total, group = 0, 0
    for word in re.split(r"[ -]", text):
        if word in EN_UNITS[1:]:
            group += EN_UNITS.index(word)
        elif word in EN_TENS[2:]:
            group += 10 * EN_TENS.index(word)
        elif word == "hundred":
            group *= 100
        elif word == "thousand":
            total, group = total + 1000 * group, 0
        elif word != "and":
            return None
    n = total + group
    return n if LOWEST <= n <= HIGHEST and english(n) == text else None


def sample(rng: random.Random) -> tuple[str, str]:
    """One (English, German) pair; magnitudes are mixed so short numbers appear too."""
    upper = rng.choice((99, 999, 999, 9_999, 99_999, 999_999))
    return pair(rng.randint(LOWEST, upper))
