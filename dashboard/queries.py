"""Pure query functions for the dashboard: a warehouse and keyword arguments in, polars out.

Nothing here imports Dash; every function is testable on a warehouse alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas import BeamscopeError
from schemas.stages import STAGE_SQL
from warehouse import Warehouse
from warehouse.compare import OUTCOMES, outcome_condition
from warehouse.intervals import bucket_intervals
from warehouse.sandbox import SafeSQL

EXPLORER_COLUMNS = [
    "sent_id", "stage", "error_tags", "chrf", "bleu", "hyp_score", "ref_score", "is_search_error",
    "first_divergence_step", "src_len", "source", "reference", "hypothesis",
]  # fmt: skip
SORTABLE = set(EXPLORER_COLUMNS) - {"error_tags"}


def run_info(wh: Warehouse, run: str) -> dict[str, Any]:
    query = "SELECT * FROM runs WHERE run_id = ?"
    return wh.memo(("run_info", run), lambda: wh.sql(query, [run]).row(0, named=True))


def _summary(wh: Warehouse, run: str, kind: str, label: str, share: str) -> pl.DataFrame:
    s = wh.mart("error_summary", run).filter(pl.col("kind") == kind)
    return s.select(pl.col("name").alias(label), "n", share).sort(["n", label], descending=[True, False])


def stage_counts(wh: Warehouse, run: str) -> pl.DataFrame:
    return _summary(wh, run, "stage", "stage", "share_of_sentences")


def tag_counts(wh: Warehouse, run: str) -> pl.DataFrame:
    return _summary(wh, run, "tag", "tag", "share_of_errors")


def histogram(wh: Warehouse, run: str, column: str, width: float) -> pl.DataFrame:
    """Counts of ``column`` (a numeric sentences column) in bins of ``width``."""
    if column not in {"chrf", "bleu", "ter", "src_len", "hyp_len", "hyp_score"}:
        raise ValueError(f"no histogram of {column!r}")
    query = (
        f"SELECT floor({column} / ?) * ? AS bin, count(*) AS n FROM sentences "
        f"WHERE run_id = ? AND {column} IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    return wh.memo(("histogram", run, column, width), lambda: wh.sql(query, [width, width, run]))


def buckets(wh: Warehouse, run: str) -> pl.DataFrame:
    cols = ["bucketing", "bucket", "bucket_order", "ref_tokens", "f_measure", "precision", "recall",
            "sentences", "exact_match"]  # fmt: skip
    rates = wh.mart("bucket_accuracy", run).select(cols)
    return rates.join(bucket_intervals(wh, run), on=["bucketing", "bucket"], how="left").sort(
        "bucketing", "bucket_order"
    )


def confusions(wh: Warehouse, run: str, top: int = 15) -> pl.DataFrame:
    c = wh.mart("token_confusions", run).select("ref_token", "hyp_token", "n", "example_sent_ids")
    return c.sort(["n", "ref_token", "hyp_token"], descending=[True, False, False]).head(top)


def worst(wh: Warehouse, run: str, top: int = 15) -> pl.DataFrame:
    query = (
        f"SELECT sent_id, {STAGE_SQL} AS stage, chrf, hyp_score, source, reference, hypothesis "
        "FROM sentences WHERE run_id = ? AND reference IS NOT NULL AND NOT exact_match "
        "ORDER BY chrf, hyp_score, sent_id LIMIT ?"
    )
    return wh.memo(("worst", run, top), lambda: wh.sql(query, [run, top]))


@dataclass(frozen=True)
class Filters:
    """The explorer's filters; every field maps to one parameterised SQL condition."""

    stage: str | None = None
    tag: str | None = None
    min_chrf: float | None = None
    max_chrf: float | None = None
    min_len: int | None = None
    max_len: int | None = None
    search_error: bool | None = None
    text: str | None = None
    ref_token: str | None = None  # confusion: reference token at the divergence step ...
    hyp_token: str | None = None  # ... and the produced one
    length_bucket: tuple[int, int] | None = None
    vs: str | None = None  # comparison: another run over the same corpus ...
    outcome: str | None = None  # ... and the sentences' outcome against it (warehouse.compare.OUTCOMES)
    cluster: int | None = None  # state cluster (table state_cluster_members) of the run
    where: str | None = None  # free SQL condition over the sentence columns (checked by the sandbox)
    sort: list[tuple[str, str]] = field(default_factory=list)

    def conditions(self, run: str) -> tuple[list[str], list[Any]]:
        conds, params = [], []
        simple = [
            (self.stage, "stage = ?"),
            (self.tag, "list_contains(error_tags, ?)"),
            (self.min_chrf, "chrf >= ?"),
            (self.max_chrf, "chrf <= ?"),
            (self.min_len, "src_len >= ?"),
            (self.max_len, "src_len <= ?"),
            (self.search_error, "is_search_error = ?"),
        ]
        for value, cond in simple:
            if value is not None:
                conds.append(cond)
                params.append(value)
        if self.text:
            conds.append("(contains(source, ?) OR contains(reference, ?) OR contains(hypothesis, ?))")
            params += [self.text] * 3
        if self.length_bucket is not None:
            conds.append("src_len BETWEEN ? AND ?")
            params += list(self.length_bucket)
        if self.ref_token is not None:
            conds.append(
                "sent_id IN (SELECT sent_id FROM sentence_errors WHERE run_id = ? AND ref_token = ? "
                "AND coalesce(hyp_token, '(ended)') = ?)"
            )
            params += [run, self.ref_token, self.hyp_token]
        if isinstance(self.vs, str) and isinstance(self.outcome, str) and self.outcome in OUTCOMES:
            conds.append(outcome_condition(self.outcome))
            params += [run, self.vs]
        if self.cluster is not None:
            conds.append(
                "sent_id IN (SELECT sent_id FROM state_cluster_members WHERE run_id = ? AND cluster = ?)"
            )
            params += [run, self.cluster]
        return conds, params


_USER = "/*user-condition*/"


def explorer_sql(filters: Filters, run: str) -> tuple[str, str, list[Any]]:
    """The page query and the count query of the explorer (with ``?`` parameters and a marker
    where the user's free SQL condition goes), and their parameters (page: + limit, offset)."""
    conds, params = filters.conditions(run)
    base = (
        f"SELECT sent_id, {STAGE_SQL} AS stage, coalesce(error_tags, []::VARCHAR[]) AS error_tags, "
        "chrf, bleu, hyp_score, ref_score, is_search_error, first_divergence_step, src_len, source, "
        "reference, hypothesis, exact_match, ter, hyp_len, ref_len FROM sentences WHERE run_id = ?"
    )
    where = " AND ".join([*conds, f"({_USER})"])
    order = ", ".join(f"{c} {d.upper()}" for c, d in filters.sort if c in SORTABLE and d in ("asc", "desc"))
    order = f"{order}, sent_id" if order else "sent_id"
    page = (
        f"SELECT {', '.join(EXPLORER_COLUMNS)} FROM ({base}) WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    )
    count = f"SELECT count(*) FROM ({base}) WHERE {where}"
    return page, count, [run, *params]


def sql_literal(value: Any) -> str:
    """A SQL literal of a filter value (strings quoted, numbers and booleans checked)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def _inline(template: str, params: list[Any]) -> str:
    parts = template.split("?")
    assert len(parts) == len(params) + 1, "one value per placeholder"
    return parts[0] + "".join(sql_literal(v) + rest for v, rest in zip(params, parts[1:], strict=True))


def explore(
    wh: Warehouse, run: str, filters: Filters, start: int, end: int, sandbox: SafeSQL | None = None
) -> tuple[pl.DataFrame, int]:
    """One page of the sentences matching ``filters`` and how many match in total.

    A free SQL condition (``filters.where``) runs only through the read-only ``sandbox``.
    """
    page, count, params = explorer_sql(filters, run)
    limit = [max(0, end - start), max(0, start)]
    if not filters.where:
        page, count = page.replace(_USER, "true"), count.replace(_USER, "true")
        return wh.sql(page, [*params, *limit]), wh.sql(count, params).item()
    if sandbox is None:
        raise BeamscopeError("free SQL conditions need the SQL sandbox")
    condition = filters.where
    rows = sandbox.run(_inline(page, [*params, *limit]).replace(_USER, condition)).df
    total = sandbox.run(_inline(count, params).replace(_USER, condition)).df.item()
    return rows, total


@dataclass(frozen=True)
class SentenceView:
    """Everything the five-stage view of one sentence shows."""

    sentence: dict[str, Any]
    source_tokens: pl.DataFrame
    target_steps: pl.DataFrame
    reference_steps: pl.DataFrame
    attention: pl.DataFrame  # decoding, step, src_pos, layer, head, weight
    beam_nodes: pl.DataFrame


def sentence_view(wh: Warehouse, run: str, sent_id: int) -> SentenceView | None:
    """The five stages of one sentence, or None if the run has no such sentence."""
    if run not in wh.run_ids():  # only complete runs; their part files are read directly
        return None
    key = [run, sent_id]

    def rows(table: str, order: str, columns: str = "* EXCLUDE (run_id, sent_id)") -> pl.DataFrame:
        src = wh.sentence_source(table, run, sent_id)
        return wh.sql(f"SELECT {columns} FROM {src} WHERE run_id = ? AND sent_id = ? ORDER BY {order}", key)

    sentence = rows("sentences", "sent_id", f"*, {STAGE_SQL} AS stage")
    if sentence.height == 0:
        return None
    return SentenceView(
        sentence.row(0, named=True),
        rows("source_tokens", "src_pos"),
        with_topk_tokens(rows("target_steps", "step"), target_tokens(wh, run)),
        rows("reference_steps", "step"),
        rows("attention", "decoding, layer, head, step, src_pos"),
        rows("beam_nodes", "node_id"),
    )


def target_tokens(wh: Warehouse, run: str) -> np.ndarray:
    """The run's target tokens by id (its ``vocabulary``), kept per complete run set."""
    return wh.memo(
        ("target_tokens", run),
        lambda: _tokens(
            wh.sql(f"SELECT token_id, token FROM {wh.sentence_source('vocabulary', run)} WHERE side = 'tgt'")
        ),
    )


def _tokens(vocab: pl.DataFrame | pa.Table) -> np.ndarray:
    frame = vocab if isinstance(vocab, pl.DataFrame) else pl.from_arrow(vocab)
    out = np.full(int(frame["token_id"].max() or 0) + 1, None, dtype=object)
    out[frame["token_id"].to_numpy()] = frame["token"].to_numpy()
    return out


def with_topk_tokens(steps: pl.DataFrame, tokens: np.ndarray) -> pl.DataFrame:
    """``steps`` with ``topk_tokens``: the tokens of ``topk_token_ids``."""
    ids = steps["topk_token_ids"].to_list()
    return steps.with_columns(topk_tokens=pl.Series([list(tokens[i]) for i in ids], dtype=pl.List(pl.String)))


def view_from_tables(tables: dict[str, pa.Table], vocabulary: pa.Table) -> SentenceView:
    """The five-stage view of a one-sentence trace held in memory (a what-if)."""

    def frame(name: str, *order: str) -> pl.DataFrame:
        return pl.from_arrow(tables[name]).drop("run_id", "sent_id").sort(*order)

    s = pl.from_arrow(tables["sentences"]).row(0, named=True)
    stage = "correct" if s["exact_match"] else s["blamed_stage"]
    s["stage"] = "no_reference" if s["reference"] is None else stage
    return SentenceView(
        s,
        frame("source_tokens", "src_pos"),
        with_topk_tokens(
            frame("target_steps", "step"), _tokens(vocabulary.filter(pc.equal(vocabulary["side"], "tgt")))
        ),
        frame("reference_steps", "step"),
        frame("attention", "decoding", "layer", "head", "step", "src_pos"),
        frame("beam_nodes", "node_id"),
    )


def attention_matrix(
    attention: pl.DataFrame, decoding: str, layer: int = -1, head: int = -1
) -> list[list[float]]:
    """[steps][src] weights of one decoding for one layer/head (-1/-1: the mean)."""
    sel = attention.filter(
        (pl.col("decoding") == decoding) & (pl.col("layer") == layer) & (pl.col("head") == head)
    )
    if sel.height == 0:
        return []
    n_src = sel["src_pos"].max() + 1
    weights = sel.sort("step", "src_pos")["weight"].to_list()
    return [weights[i : i + n_src] for i in range(0, len(weights), n_src)]


def layer_heads(attention: pl.DataFrame) -> list[tuple[int, int]]:
    """The (layer, head) pairs stored besides the mean, sorted."""
    pairs = attention.filter(pl.col("layer") >= 0).select("layer", "head").unique().sort("layer", "head")
    return [tuple(r) for r in pairs.iter_rows()]


# state clusters (``pipeline.clusters``): where in decoder-state space the model fails
def state_clusters(wh: Warehouse, run: str) -> pl.DataFrame:
    """The run's state clusters, ranked (cluster 1 has the highest error rate)."""
    return wh.sql(
        "SELECT cluster, n_states, n_wrong, error_rate, top_produced, top_reference, example_sent_ids "
        "FROM state_clusters WHERE run_id = ? ORDER BY cluster",
        [run],
    )


def cluster_problem(wh: Warehouse, run: str, cluster: int) -> str | None:
    """Why ``cluster`` is no state cluster of ``run`` (None when it is one)."""
    n = wh.sql("SELECT count(*) FROM state_clusters WHERE run_id = ?", [run]).item()
    if n == 0:
        return (
            f"run {run} has no state clusters (no decoder states kept, or too few sentences with a reference)"
        )
    if not 1 <= cluster <= n:
        return f"run {run} has no state cluster {cluster}: its clusters are numbered 1 to {n}"
    return None
