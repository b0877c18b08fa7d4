"""How far to trust the blamed stage: the planted faults of a run (``beamscope calibrate``) and the
precision and recall of each stage's blame measured on them (pure functions over a warehouse)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from pipeline.taxonomy import Signals, Taxonomy
from schemas.stages import STAGES
from warehouse.store import Warehouse

# one row per planted fault that changed the output (a search fault: to an output the model
# scores lower than the run's), with the signals the stage rule reads
_PLANTED = """
WITH f AS (
    SELECT run_id, json_extract_string(options, '$.faults.stage') AS planted
    FROM runs WHERE json_extract_string(options, '$.faults.of') = $run
        AND json_extract(options, '$.faults.n')::BIGINT = $n
        AND json_extract(options, '$.faults.seed')::BIGINT = $seed
)
SELECT s.sent_id, f.planted, s.blamed_stage, s.is_search_error, s.nn_encoder_min_agreement,
       s.nn_decoder_agreement, s.nn_attention_agreement, s.attn_entropy_at_divergence,
       s.attn_coverage_at_divergence
FROM f JOIN sentences s ON s.run_id = f.run_id
JOIN sentences o ON o.run_id = $run AND o.sent_id = s.sent_id
WHERE NOT s.exact_match AND (f.planted <> 'search' OR o.hyp_score > s.hyp_score)
ORDER BY f.planted, s.sent_id
"""


def planted_faults(wh: Warehouse, run: str, n: int, seed: int) -> pl.DataFrame:
    """The counted faults planted in ``run``'s sentences (``n`` a stage, ``seed``): planted and
    blamed stage, signals."""
    return wh.sql(_PLANTED, {"run": run, "n": n, "seed": seed})


def planted_signals(found: pl.DataFrame) -> Signals:
    """The stage rule's signals of ``planted_faults`` rows, as arrays (NaN where null)."""
    numbers = [
        found[c].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        for c in (
            "nn_encoder_min_agreement",
            "nn_decoder_agreement",
            "nn_attention_agreement",
            "attn_entropy_at_divergence",
            "attn_coverage_at_divergence",
        )
    ]
    return Signals(found["is_search_error"].to_numpy().astype(bool), *numbers)


def planted_counts(wh: Warehouse, run: str, n: int, seed: int) -> pl.DataFrame:
    """Per planted stage: faults planted, and those that changed the output (counted)."""
    return wh.sql(
        """
        SELECT json_extract_string(r.options, '$.faults.stage') AS planted, count(*) AS planted_n,
               count(*) FILTER (WHERE NOT s.exact_match) AS changed_output
        FROM runs r JOIN sentences s ON s.run_id = r.run_id
        WHERE json_extract_string(r.options, '$.faults.of') = $run
          AND json_extract(r.options, '$.faults.n')::BIGINT = $n
          AND json_extract(r.options, '$.faults.seed')::BIGINT = $seed
        GROUP BY ALL ORDER BY planted
        """,
        {"run": run, "n": n, "seed": seed},
    )


def confusion(wh: Warehouse, run: str, taxonomy: str, half: str | None = None) -> pl.DataFrame:
    """Planted x blamed counts of the calibration of ``run`` (both halves unless ``half``)."""
    return wh.sql(
        """
        SELECT planted, blamed, sum(n)::BIGINT AS n FROM blame_calibration
        WHERE run_id = $run AND taxonomy = $taxonomy AND ($half IS NULL OR half = $half)
        GROUP BY ALL ORDER BY planted, blamed
        """,
        {"run": run, "taxonomy": taxonomy, "half": half},
    )


def confusion_matrix(counts: pl.DataFrame) -> pl.DataFrame:
    """``confusion`` as a matrix: one row per planted stage, one column per blamed stage."""
    rows = []
    for planted in STAGES:
        got = counts.filter(pl.col("planted") == planted)
        row = {b: int(got.filter(pl.col("blamed") == b)["n"].sum()) for b in STAGES}
        rows.append({"planted": planted, **row})
    return pl.DataFrame(rows)


def stage_scores(counts: pl.DataFrame) -> pl.DataFrame:
    """Per stage: faults planted, blamed, right; precision and recall (null: none to divide)."""
    rows = []
    for stage in STAGES:
        hit = int(counts.filter((pl.col("planted") == stage) & (pl.col("blamed") == stage))["n"].sum())
        planted = int(counts.filter(pl.col("planted") == stage)["n"].sum())
        blamed = int(counts.filter(pl.col("blamed") == stage)["n"].sum())
        rows.append(
            dict(
                stage=stage,
                planted=planted,
                blamed=blamed,
                right=hit,
                precision=hit / blamed if blamed else None,
                recall=hit / planted if planted else None,
            )
        )
    return pl.DataFrame(rows, schema_overrides={"precision": pl.Float64, "recall": pl.Float64})


@dataclass(frozen=True)
class Reliability:
    """The blame's measured reliability for one run: from the latest calibration of its model."""

    calibrated_run: str  # the run the faults were planted in
    model_name: str
    created_at: str
    taxonomy: str  # which thresholds were measured: 'recorded' | 'calibrated'
    same_thresholds: bool  # they are the ones this run's blame used
    scores: pl.DataFrame  # ``stage_scores`` on the held-out half


def reliability(wh: Warehouse, run: str) -> Reliability | None:
    """The precision and recall of each stage's blame in ``run``, measured on the held-out faults
    of the latest calibration of the same model, under the thresholds the run used when that
    calibration measured them (else under the calibrated ones); None without a calibration."""
    found = wh.sql(
        """
        SELECT c.run_id, c.created_at, c.model_name, c.taxonomy, c.thresholds, r.options
        FROM blame_calibration c JOIN runs r ON r.model_hash = c.model_hash AND r.run_id = $run
        GROUP BY ALL ORDER BY c.created_at DESC, c.taxonomy
        """,
        {"run": run},
    )
    if found.is_empty():
        return None
    latest = found.filter(pl.col("created_at") == found["created_at"].max())
    used = Taxonomy.from_options(json.loads(latest["options"][0]).get("taxonomy", {}))
    same = [
        r for r in latest.iter_rows(named=True) if Taxonomy.from_options(json.loads(r["thresholds"])) == used
    ]
    row = same[0] if same else latest.filter(pl.col("taxonomy") == "calibrated").row(0, named=True)
    counts = confusion(wh, row["run_id"], row["taxonomy"], "held_out")
    return Reliability(
        row["run_id"],
        row["model_name"],
        row["created_at"].strftime("%Y-%m-%d %H:%M UTC"),
        row["taxonomy"],
        bool(same),
        stage_scores(counts),
    )


def _pct(x: float | None) -> str:
    return "   -" if x is None else f"{100 * x:3.0f}%"


def format_calibration(wh: Warehouse, run: str) -> str:
    """The calibration of ``run`` as text: faults per stage, thresholds, held-out confusion matrices
    and precision / recall per stage under the recorded and the calibrated thresholds."""
    meta = wh.sql(
        "SELECT DISTINCT taxonomy, thresholds, model_name, created_at, faults_per_stage, seed "
        "FROM blame_calibration WHERE run_id = $run ORDER BY taxonomy DESC",
        {"run": run},
    )
    if meta.is_empty():
        return f"run {run} has no blame calibration (beamscope calibrate --run {run})"
    first = meta.row(0, named=True)
    when = f"{first['created_at']:%Y-%m-%d %H:%M} UTC"
    lines = [f"blame calibration of run {run} (model {first['model_name']}, {when})"]
    lines.append(
        "faults planted / changed the output / counted (search: to an output the model scores lower):"
    )
    n, seed = first["faults_per_stage"], first["seed"]
    counted = planted_faults(wh, run, n, seed).group_by("planted").len()
    for row in planted_counts(wh, run, n, seed).iter_rows(named=True):
        n = counted.filter(pl.col("planted") == row["planted"])["len"].sum()
        lines.append(f"  {row['planted']:<11} {row['planted_n']:>5} {row['changed_output']:>5} {n:>5}")
    for row in meta.iter_rows(named=True):
        shown = {
            k: v for k, v in json.loads(row["thresholds"]).items() if k not in ("neighbours", "length_ratio")
        }
        lines.append(
            f"{row['taxonomy']:<10} thresholds: " + ", ".join(f"{k} {v:g}" for k, v in shown.items())
        )
    scores = {}
    for taxonomy in meta["taxonomy"].to_list():
        counts = confusion(wh, run, taxonomy, "held_out")
        scores[taxonomy] = stage_scores(counts)
        lines.append(f"\nheld-out confusion, {taxonomy} thresholds (rows planted, columns blamed):")
        matrix = confusion_matrix(counts)
        lines.append(f"  {'':<11}" + "".join(f"{s:>11}" for s in STAGES))
        for r in matrix.iter_rows(named=True):
            lines.append(f"  {r['planted']:<11}" + "".join(f"{r[s]:>11}" for s in STAGES))
    lines.append("\nheld-out precision / recall per stage (target: precision >= 80%, recall >= 70%):")
    for i, stage in enumerate(STAGES):
        cells = []
        for taxonomy, table in scores.items():
            p, r = table.row(i, named=True)["precision"], table.row(i, named=True)["recall"]
            met = p is not None and r is not None and p >= 0.8 and r >= 0.7
            cells.append(f"{taxonomy} {_pct(p)} / {_pct(r)}{' met' if met else '    '}")
        lines.append(f"  {stage:<11} " + "   ".join(cells))
    return "\n".join(lines)
