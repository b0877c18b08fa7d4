"""Perturbation runs (``beamscope perturb``) against their original runs, sentence by sentence.

A perturbation run's ``runs.options.perturbation`` names the run it perturbs (``of``), its kind and
its expectation ('same', 'change' or null); its sentences keep the original sent_id. Per run:

- ``changed``: the variant's hypothesis differs from the original's;
- ``invariance_failures``: changed where the kind expects the same output ('same' kinds only);
- ``stayed``: unchanged where the kind expects a change ('change' kinds only);
- ``exact_match``: the variant's hypothesis equals its own reference (where one is known);
- flips: the original was right and the variant is wrong, worst first by how far the reference's
  score fell (original ``ref_score`` - variant ``ref_score``).

Rates are shares of the ``n`` paired sentences (skipped variants are not paired; see ``n_skipped``).
"""

from __future__ import annotations

import polars as pl

from schemas import WarehouseError
from warehouse.store import Warehouse

_OPTION = "json_extract_string(options, '$.perturbation.{}')"
RUNS_SQL = (
    f"SELECT run_id, {_OPTION.format('of')} AS of, {_OPTION.format('kind')} AS kind, "
    f"{_OPTION.format('expect')} AS expect, n_skipped, created_at FROM runs "
    f"WHERE {_OPTION.format('of')} IS NOT NULL"
)
SUMMARY_SQL = f"""
WITH p AS ({RUNS_SQL}),
pairs AS (
    SELECT v.run_id, v.hypothesis IS DISTINCT FROM o.hypothesis AS changed, v.exact_match AS em
    FROM p JOIN sentences v ON v.run_id = p.run_id
    JOIN sentences o ON o.run_id = p.of AND o.sent_id = v.sent_id
)
SELECT p.run_id, p.of, p.kind, p.expect, count(pairs.run_id) AS n, p.n_skipped,
    count_if(pairs.changed)::BIGINT AS changed,
    CASE WHEN p.expect = 'same' THEN count_if(pairs.changed)::BIGINT END AS invariance_failures,
    CASE WHEN p.expect = 'change' THEN count_if(NOT pairs.changed)::BIGINT END AS stayed,
    count(pairs.em) AS with_reference, avg(pairs.em::DOUBLE) AS exact_match
FROM p LEFT JOIN pairs USING (run_id)
GROUP BY p.run_id, p.of, p.kind, p.expect, p.n_skipped, p.created_at
ORDER BY p.created_at, p.run_id
"""
FLIPS_SQL = """
SELECT v.sent_id, o.source, v.source AS variant_source, o.reference,
    v.reference AS variant_reference, o.hypothesis, v.hypothesis AS variant_hypothesis,
    o.ref_score, v.ref_score AS variant_ref_score, o.ref_score - v.ref_score AS ref_score_drop
FROM sentences o JOIN sentences v ON v.sent_id = o.sent_id
WHERE o.run_id = ? AND v.run_id = ? AND o.exact_match AND NOT v.exact_match
ORDER BY ref_score_drop DESC NULLS LAST, v.sent_id
LIMIT ?
"""


def perturbation_runs(wh: Warehouse) -> pl.DataFrame:
    """The complete perturbation runs: run_id, of, kind, expect, n_skipped, created_at."""
    return _complete(wh, wh.sql(RUNS_SQL + " ORDER BY created_at, run_id"))


def perturbation_summaries(wh: Warehouse) -> pl.DataFrame:
    """One row per complete perturbation run: run_id, of, kind, expect, n, n_skipped, changed,
    invariance_failures, stayed (null where the kind does not expect it), with_reference,
    exact_match (null without references) and the rates changed_share, invariance_failure_rate,
    stayed_rate."""
    frame = _complete(wh, wh.sql(SUMMARY_SQL))
    share = lambda c: pl.when(pl.col("n") > 0).then(pl.col(c) / pl.col("n"))  # noqa: E731
    return frame.with_columns(
        changed_share=share("changed"),
        invariance_failure_rate=share("invariance_failures"),
        stayed_rate=share("stayed"),
    )


def perturbation_summary(wh: Warehouse, run: str) -> dict:
    """``perturbation_summaries``' row of ``run``, with its number of flips (``n_flips``)."""
    rows = perturbation_summaries(wh).filter(pl.col("run_id") == run)
    if rows.height == 0:
        raise WarehouseError(f"no complete perturbation run {run!r}")
    row = rows.row(0, named=True)
    return {**row, "n_flips": worst_flips(wh, run, limit=None).height}


def worst_flips(wh: Warehouse, run: str, limit: int | None = 20) -> pl.DataFrame:
    """Perturbation run ``run``'s sentences right in the original and wrong as variants, worst
    first: sent_id, source, variant_source, reference, variant_reference, hypothesis,
    variant_hypothesis, ref_score, variant_ref_score, ref_score_drop."""
    of = wh.sql(f"SELECT {_OPTION.format('of')} AS of FROM runs WHERE run_id = ?", [run])["of"]
    if of.len() == 0 or of[0] is None:
        raise WarehouseError(f"no perturbation run {run!r}")
    return wh.sql(FLIPS_SQL, [of[0], run, limit])


def is_variant_pair(wh: Warehouse, a: object, b: object) -> bool:
    """Whether complete run ``b`` is a perturbation of complete run ``a``."""
    if not (isinstance(a, str) and isinstance(b, str)) or not {a, b} <= set(wh.run_ids()):
        return False
    return bool(perturbation_runs(wh).filter((pl.col("run_id") == b) & (pl.col("of") == a)).height)


def format_summary(s: dict) -> str:
    """One line of ``perturbation_summary``'s numbers, for a terminal."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    parts = [
        f"run {s['run_id']}: {s['kind']} of {s['of']} (expect {s['expect'] or 'nothing'}): "
        f"{s['n']} sentences, {s['n_skipped']} skipped",
        f"output changed {s['changed']} ({pct(s['changed_share'])})",
    ]
    if s["expect"] == "same":
        parts.append(f"invariance failures {s['invariance_failures']} ({pct(s['invariance_failure_rate'])})")
    if s["expect"] == "change":
        parts.append(f"stayed {s['stayed']} ({pct(s['stayed_rate'])})")
    if s["exact_match"] is not None:
        parts += [f"variant exact match {pct(s['exact_match'])}", f"flips {s['n_flips']}"]
    return "; ".join(parts)


def _complete(wh: Warehouse, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("run_id").is_in(wh.run_ids()))
