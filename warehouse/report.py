"""The error report of one run: pure functions over a warehouse (two runs: ``warehouse.compare``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from warehouse.blame import Reliability, reliability
from warehouse.intervals import bucket_intervals
from warehouse.store import Warehouse


@dataclass(frozen=True)
class ErrorReport:
    run: dict[str, Any]
    stages: pl.DataFrame
    tags: pl.DataFrame
    confusions: pl.DataFrame
    worst: pl.DataFrame
    buckets: pl.DataFrame
    reliability: Reliability | None = None  # the blame's measured precision (``beamscope calibrate``)

    def to_json(self) -> str:
        trust = self.reliability
        return json.dumps(
            {
                "run": self.run,
                "blame_reliability": None
                if trust is None
                else {
                    **{k: v for k, v in vars(trust).items() if k != "scores"},
                    "stages": trust.scores.to_dicts(),
                },
                **{
                    name: getattr(self, name).to_dicts()
                    for name in ("stages", "tags", "confusions", "worst", "buckets")
                },
            },
            default=str,
            indent=1,
        )


def error_report(wh: Warehouse, run: str | None = None, top: int = 10) -> ErrorReport:
    """Corpus scores, the stage and tag breakdown, top confusions, worst sentences, buckets."""
    run_id = wh.resolve_run(run)
    info = wh.sql(
        "SELECT run_id, model_name, corpus, split, n_sentences, n_skipped, exact_match, bleu, chrf, ter, "
        "neighbours_run FROM runs WHERE run_id = ?",
        [run_id],
    ).row(0, named=True)
    summary = wh.mart("error_summary", run_id)
    ranked = summary.sort(["n", "name"], descending=[True, False])  # ties in name order: stable output
    stages = ranked.filter(pl.col("kind") == "stage").drop("kind")
    tags = ranked.filter(pl.col("kind") == "tag").drop("kind")
    confusions = wh.sql(
        "SELECT ref_token, hyp_token, n, example_sent_ids, mean_ref_rank FROM token_confusions "
        "WHERE run_id = ? ORDER BY n DESC, ref_token, hyp_token LIMIT ?",
        [run_id, top],
    )
    worst = wh.sql(
        "SELECT sent_id, stage, chrf, hyp_score, source, reference, hypothesis FROM sentence_errors "
        "WHERE run_id = ? AND stage NOT IN ('correct', 'no_reference') "
        "ORDER BY chrf ASC, hyp_score ASC, sent_id LIMIT ?",
        [run_id, top],
    )
    cols = ["bucketing", "bucket", "ref_tokens", "precision", "recall", "f_measure"]
    cols += ["f_low", "f_high", "sentences", "exact_match", "exact_low", "exact_high"]
    buckets = (
        wh.mart("bucket_accuracy", run_id)
        .join(bucket_intervals(wh, run_id), on=["bucketing", "bucket"], how="left")
        .sort("bucketing", "bucket_order")
        .select(cols)
    )
    return ErrorReport(info, stages, tags, confusions, worst, buckets, reliability(wh, run_id))


def format_report(r: ErrorReport) -> str:
    """The report as text for a terminal."""
    run = r.run
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    num = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = [
        f"run {run['run_id']}  ({run['model_name']} on {run['corpus']}, split {run['split']})",
        f"sentences {run['n_sentences']}  skipped {run['n_skipped']}  exact match {pct(run['exact_match'])}  "
        f"BLEU {num(run['bleu'])}  chrF {num(run['chrf'])}  TER {num(run['ter'])}",
        f"neighbour blame from: {run['neighbours_run'] or 'no training run (encoder/decoder rules off)'}",
        "",
        "stage breakdown:",
    ]
    trust = (
        {} if r.reliability is None else {s["stage"]: s for s in r.reliability.scores.iter_rows(named=True)}
    )
    for row in r.stages.iter_rows(named=True):
        share = "" if row["share_of_errors"] is None else f"  {pct(row['share_of_errors'])} of errors"
        if row["name"] in trust:
            t = trust[row["name"]]
            share += f"  (blame precision {pct(t['precision'])}, recall {pct(t['recall'])})"
        lines.append(
            f"  {row['name']:<12} {row['n']:>7}  {pct(row['share_of_sentences'])} of sentences{share}"
        )
    lines.append(f"  {reliability_note(r.reliability)}")
    lines += ["", "tags:"]
    lines += [
        f"  {t['name']:<20} {t['n']:>7}  {pct(t['share_of_errors'])} of errors"
        for t in r.tags.iter_rows(named=True)
    ]
    lines += ["", "top confusions at the first divergence (reference -> produced):"]
    for c in r.confusions.iter_rows(named=True):
        ids = ", ".join(map(str, c["example_sent_ids"]))
        lines.append(f"  {c['ref_token']!r:>10} -> {c['hyp_token']!r:<10} x{c['n']:<5} e.g. sentences {ids}")
    lines += ["", "worst sentences:"]
    for w in r.worst.iter_rows(named=True):
        lines.append(f"  #{w['sent_id']:<6} [{w['stage']}] chrF {num(w['chrf'])}  {w['source']!r}")
        lines.append(f"          ref {w['reference']!r}  hyp {w['hypothesis']!r}")
    lines += ["", "token accuracy by bucket (compare-mt style; [95% bootstrap interval over sentences]):"]
    for b in r.buckets.iter_rows(named=True):
        f_ci = f" [{num(b['f_low'])}, {num(b['f_high'])}]"
        em = "" if b["sentences"] is None else f"  sentences {b['sentences']}  exact {pct(b['exact_match'])}"
        em += "" if b["sentences"] is None else f" [{pct(b['exact_low'])}, {pct(b['exact_high'])}]"
        lines.append(
            f"  {b['bucketing']:<20} {b['bucket']:<16} ref tokens {b['ref_tokens']:>7}  "
            f"F {num(b['f_measure'])}{f_ci}  P {num(b['precision'])}  R {num(b['recall'])}{em}"
        )
    return "\n".join(lines)


def format_breakdown(reports: list[ErrorReport]) -> str:
    """The stage and tag counts of several runs side by side: a row a stage or tag, a column a run."""
    names: dict[str, list[str]] = {"stage": [], "tag": []}
    counts: list[dict[str, int]] = []
    for r in reports:
        counts.append({})
        for kind, frame in (("stage", r.stages), ("tag", r.tags)):
            names[kind] += [n for n in frame["name"].to_list() if n not in names[kind]]
            counts[-1].update(zip(frame["name"], frame["n"], strict=True))
    labels = [(f"{kind} {n}", n) for kind in ("stage", "tag") for n in names[kind]]
    lw, w = max(len(label) for label, _ in labels) + 2, 2 + max(len(r.run["run_id"]) for r in reports)
    lines = [
        " " * lw + "".join(f"{r.run['run_id']:>{w}}" for r in reports),
        f"{'exact match':<{lw}}" + "".join(f"{r.run['exact_match']:>{w}.1%}" for r in reports),
    ]
    lines += [f"{label:<{lw}}" + "".join(f"{c.get(n, 0):>{w}}" for c in counts) for label, n in labels]
    return "\n".join(lines)


def reliability_note(trust: Reliability | None) -> str:
    """Where the blame precision shown beside the stages comes from (or that there is none)."""
    if trust is None:
        return "blame precision: not measured for this model (beamscope calibrate)"
    which = (
        "this run's thresholds" if trust.same_thresholds else "calibrated thresholds (this run used others)"
    )
    return (
        f"blame precision and recall: held-out planted faults of run {trust.calibrated_run}, "
        f"model {trust.model_name}, {trust.created_at}, {which}"
    )
