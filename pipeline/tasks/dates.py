"""The `dates` task (Seq2Seq-Vis' first use case): human-written dates -> ISO ``YYYY-MM-DD``.

Years run from 1950 to 2049 so that two-digit years are unambiguous ("21" -> 2021,
"75" -> 1975). Numeric day/month orders are told apart by their separator, as people do:
``/`` is the US month-first order, ``.`` the European day-first order, ``-`` and the
compact form are year-first.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

FIRST = dt.date(1950, 1, 1).toordinal()
LAST = dt.date(2049, 12, 31).toordinal()

MONTHS_EN = "January February March April May June July August September October November December".split()
DAYS_EN = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS_DE = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()
DAYS_DE = "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split()
MONTHS_FR = "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split()
DAYS_FR = "lundi mardi mercredi jeudi vendredi samedi dimanche".split()
MONTHS_ES = "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split()


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _mon(d: dt.date) -> str:
    return MONTHS_EN[d.month - 1]


def _abbr(d: dt.date) -> str:
    return MONTHS_EN[d.month - 1][:3]


def _wd(d: dt.date) -> str:
    return DAYS_EN[d.weekday()]


def _yy(d: dt.date) -> str:
    return f"{d.year % 100:02d}"


Format = Callable[[dt.date], str]

FORMATS: dict[str, Format] = {
    "month_d_y": lambda d: f"{_mon(d)} {d.day}, {d.year}",
    "month_ord_y": lambda d: f"{_mon(d)} {ordinal(d.day)}, {d.year}",
    "d_month_y": lambda d: f"{d.day} {_mon(d)} {d.year}",
    "ord_of_month_y": lambda d: f"{ordinal(d.day)} of {_mon(d)} {d.year}",
    "the_ord_of_month": lambda d: f"the {ordinal(d.day)} of {_mon(d)}, {d.year}",
    "abbr_d_y": lambda d: f"{_abbr(d)} {d.day}, {d.year}",
    "abbr_dot_d_yy": lambda d: f"{_abbr(d)}. {d.day} '{_yy(d)}",
    "d_abbr_y": lambda d: f"{d.day} {_abbr(d)} {d.year}",
    "wd3_d_abbr_y": lambda d: f"{_wd(d)[:3]} {d.day} {_abbr(d)} {d.year}",
    "wd_month_d_y": lambda d: f"{_wd(d)}, {_mon(d)} {d.day}, {d.year}",
    "wd_ord_month_y": lambda d: f"{_wd(d)} {ordinal(d.day)} {_mon(d)} {d.year}",
    "upper_abbr_dd_y": lambda d: f"{_abbr(d).upper()} {d.day:02d} {d.year}",
    "dd_abbr_yy": lambda d: f"{d.day:02d}-{_abbr(d)}-{_yy(d)}",
    "us_mm_dd_yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "us_m_d_yy": lambda d: f"{d.month}/{d.day}/{_yy(d)}",
    "eu_dd_mm_yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "eu_d_m_yy": lambda d: f"{d.day}.{d.month}.{_yy(d)}",
    "ymd_slash": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "compact": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
    "de_d_month_y": lambda d: f"{d.day}. {MONTHS_DE[d.month - 1]} {d.year}",
    "de_wd_d_month_y": lambda d: f"{DAYS_DE[d.weekday()]}, {d.day}. {MONTHS_DE[d.month - 1]} {d.year}",
    "fr_d_month_y": lambda d: f"{d.day} {MONTHS_FR[d.month - 1]} {d.year}",
    "fr_wd_d_month_y": lambda d: f"{DAYS_FR[d.weekday()]} {d.day} {MONTHS_FR[d.month - 1]} {d.year}",
    "es_d_de_month_de_y": lambda d: f"{d.day} de {MONTHS_ES[d.month - 1]} de {d.year}",
}
_NAMES = sorted(FORMATS)


def sample(rng: random.Random) -> tuple[str, str]:
    """One (human date, ISO date) pair."""
    date = dt.date.fromordinal(rng.randint(FIRST, LAST))
    return FORMATS[rng.choice(_NAMES)](date), date.isoformat()


def formats_of(source: str, date: dt.date) -> list[str]:
    """The formats that write ``date`` as ``source`` (none: ``source`` is not ``date`` in this task)."""
    return [name for name in _NAMES if FORMATS[name](date) == source]
