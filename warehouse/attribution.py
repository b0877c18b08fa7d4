"""Attention against attribution: does the model draw from where it looks?

- ``attention_attribution``: one row per attributed hypothesis step: the most attended source
  position (mean cross-attention over layers and heads), the most attributed one (largest
  ``|score|`` of ``attribution``), whether they agree, and Spearman's rank correlation of
  attention weights and ``|score|`` over the step's source positions (NULL with one position).
- ``attention_attribution_summary``: the same per run, grouped by sentence stage and by error
  tag, over every step and over first-divergence steps only.

Magnitudes are compared because attention is never negative while a token can push a
prediction down; the sign stays in ``attribution``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from schemas.layout import run_dir
from schemas.stages import STAGE_SQL

if TYPE_CHECKING:
    from warehouse.store import Warehouse

# ranks with ties averaged (Spearman), per step
_RANKED = """
SELECT run_id, sent_id, step, src_pos, {value} AS v,
       rank() OVER w + (count(*) OVER (PARTITION BY run_id, sent_id, step, {value}) - 1) / 2.0 AS r,
       row_number() OVER (PARTITION BY run_id, sent_id, step ORDER BY {value} DESC, src_pos) AS top
FROM {source}
WINDOW w AS (PARTITION BY run_id, sent_id, step ORDER BY {value})
"""

_ATTR_SRC = "(SELECT run_id, sent_id, step, position AS src_pos, score FROM attribution WHERE side = 'src')"
_ATTN_SRC = (  # the mean over layers and heads, of the attributed sentences only
    "(SELECT a.run_id, a.sent_id, a.step, a.src_pos, a.weight FROM attention a "
    "SEMI JOIN (SELECT DISTINCT run_id, sent_id FROM attribution_steps) d USING (run_id, sent_id) "
    "WHERE a.decoding = 'hyp' AND a.layer = -1 AND a.head = -1)"
)

ATTENTION_ATTRIBUTION = (
    "WITH attr AS NOT MATERIALIZED ("
    + _RANKED.format(value="abs(score)", source=_ATTR_SRC)
    + "), attn AS NOT MATERIALIZED ("
    + _RANKED.format(value="weight::DOUBLE", source=_ATTN_SRC)
    + """)
SELECT x.run_id, x.sent_id, x.step, count(*) AS n_src,
       any_value(y.src_pos) FILTER (WHERE y.top = 1) AS attn_top_pos,
       any_value(x.src_pos) FILTER (WHERE x.top = 1) AS attr_top_pos,
       attn_top_pos = attr_top_pos AS same_top,
       corr(x.r, y.r) AS spearman
FROM attr x JOIN attn y USING (run_id, sent_id, step, src_pos)
GROUP BY x.run_id, x.sent_id, x.step
"""
)

ATTENTION_ATTRIBUTION_SUMMARY = f"""
WITH steps AS (
    SELECT a.*, {STAGE_SQL} AS stage, coalesce(s.error_tags, []::VARCHAR[]) AS tags,
           a.step = s.first_divergence_step AS at_divergence
    FROM attention_attribution a JOIN sentences s USING (run_id, sent_id)),
grouped AS (
    SELECT run_id, 'stage' AS grouping, stage AS "group", * EXCLUDE (run_id, stage, tags) FROM steps
    UNION ALL
    SELECT run_id, 'tag', unnest(tags), * EXCLUDE (run_id, stage, tags) FROM steps)
SELECT run_id, grouping, "group", count(DISTINCT sent_id) AS sentences, count(*) AS steps,
       avg(same_top::INT) AS top_agreement, avg(spearman) AS mean_spearman,
       count(*) FILTER (WHERE at_divergence) AS divergence_steps,
       avg(same_top::INT) FILTER (WHERE at_divergence) AS divergence_top_agreement,
       avg(spearman) FILTER (WHERE at_divergence) AS divergence_spearman
FROM grouped GROUP BY ALL ORDER BY run_id, grouping, steps DESC
"""


def sentence_attribution(wh: Warehouse, run: str, sent_id: int) -> pl.DataFrame:
    """The attribution rows of one sentence (step, side, position, score, method); empty when the
    run has no attribution of it."""
    if not run_dir(wh.root, "attribution", run).exists():
        return pl.DataFrame(
            schema={
                "step": pl.Int32,
                "side": pl.String,
                "position": pl.Int32,
                "score": pl.Float32,
                "method": pl.String,
            }
        )
    rows, steps = (wh.sentence_source(t, run, sent_id) for t in ("attribution", "attribution_steps"))
    return wh.sql(
        f"SELECT a.step, a.side, a.position, a.score, s.method FROM {rows} a "
        f"JOIN {steps} s USING (run_id, sent_id, step) WHERE a.run_id = ? AND a.sent_id = ? "
        "ORDER BY a.step, a.side, a.position",
        [run, sent_id],
    )


def attribution_matrix(rows: pl.DataFrame, side: str, n_steps: int, width: int) -> list[list[float | None]]:
    """[steps][positions] scores of ``side`` (None where a step has none: later target tokens)."""
    z: list[list[float | None]] = [[None] * width for _ in range(n_steps)]
    for step, pos, score in (
        rows.filter(pl.col("side") == side).select("step", "position", "score").iter_rows()
    ):
        if step < n_steps and pos < width:
            z[step][pos] = score
    return z
