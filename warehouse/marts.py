"""Marts: DuckDB views built on the table views, one named question each.

- ``sentence_errors``: one row per sentence: its stage (``correct``, ``no_reference`` or the
  blamed stage), tags, and what happened at the first divergence step.
- ``error_summary``: per run, counts and shares of every stage and tag.
- ``token_confusions``: reference token -> produced token at the divergence step, with counts
  and example sentence ids.
- ``bucket_accuracy``: token precision / recall / F-measure (as compare-mt) by the reference
  token's frequency in the training run and by source-length bucket; source-length buckets
  also count their sentences and exact matches (a sentence lies in one length bucket but in
  many frequency buckets, so those two columns are NULL for frequency buckets).
- ``sentence_buckets``: the counts ``bucket_accuracy`` sums, per sentence and bucket (what
  ``warehouse.intervals`` resamples for bootstrap intervals).
- ``attention_coverage``: per sentence, how much of the source the hypothesis attended
  (threshold: the run's ``taxonomy.coverage``).
- ``attention_attribution``, ``attention_attribution_summary``: attention against gradient
  attribution per step, and by stage and error tag (``warehouse.attribution``).
"""

from __future__ import annotations

from schemas.buckets import SOURCE_LENGTH, TOKEN_FREQUENCY
from schemas.stages import STAGE_SQL
from warehouse.attribution import ATTENTION_ATTRIBUTION, ATTENTION_ATTRIBUTION_SUMMARY

# the step tables are joined at the divergence step only (inline, so the run filter reaches the scans)
SENTENCE_ERRORS = f"""
SELECT s.run_id, s.sent_id, s.split, s.source, s.reference, s.hypothesis,
       s.src_len, s.ref_len, s.hyp_len,
       {STAGE_SQL} AS stage,
       coalesce(s.error_tags, []::VARCHAR[]) AS error_tags,
       s.is_search_error, s.first_divergence_step,
       r.token AS ref_token, t.token AS hyp_token, r.rank AS ref_rank, r.prob AS ref_prob,
       r.top1_prob AS top1_prob, r.attn_entropy AS attn_entropy, r.attn_argmax_src_pos AS attn_src_pos,
       s.hyp_score, s.ref_score, s.bleu, s.chrf, s.ter,
       s.nn_encoder_agreement, s.nn_decoder_agreement, s.nn_reference_agreement,
       s.nn_encoder_min_agreement, s.nn_attention_agreement, s.attn_entropy_at_divergence,
       s.attn_coverage_at_divergence
FROM sentences s
LEFT JOIN (SELECT x.* FROM reference_steps x JOIN sentences d ON x.run_id = d.run_id
           AND x.sent_id = d.sent_id AND x.step = d.first_divergence_step) r
  ON r.run_id = s.run_id AND r.sent_id = s.sent_id AND r.step = s.first_divergence_step
LEFT JOIN (SELECT x.* FROM target_steps x JOIN sentences d ON x.run_id = d.run_id
           AND x.sent_id = d.sent_id AND x.step = d.first_divergence_step) t
  ON t.run_id = s.run_id AND t.sent_id = s.sent_id AND t.step = s.first_divergence_step
"""

# counts need only sentence columns: no step tables
ERROR_SUMMARY = f"""
WITH se AS NOT MATERIALIZED (
    SELECT run_id, {STAGE_SQL} AS stage, coalesce(error_tags, []::VARCHAR[]) AS error_tags FROM sentences),
totals AS NOT MATERIALIZED (
    SELECT run_id, count(*) FILTER (WHERE stage <> 'no_reference') AS sentences,
           count(*) FILTER (WHERE stage NOT IN ('correct', 'no_reference')) AS errors
    FROM se GROUP BY run_id),
stages AS NOT MATERIALIZED (
    SELECT run_id, 'stage' AS kind, stage AS name, count(*) AS n
    FROM se WHERE stage <> 'no_reference' GROUP BY ALL),
tags AS NOT MATERIALIZED (
    SELECT run_id, 'tag' AS kind, tag AS name, count(*) AS n
    FROM (SELECT run_id, unnest(error_tags) AS tag FROM se
          WHERE stage NOT IN ('correct', 'no_reference'))
    GROUP BY ALL)
SELECT u.run_id, u.kind, u.name, u.n,
       CASE WHEN u.name = 'correct' THEN NULL ELSE u.n / nullif(t.errors, 0) END AS share_of_errors,
       u.n / nullif(t.sentences, 0) AS share_of_sentences
FROM (SELECT * FROM stages UNION ALL SELECT * FROM tags) u JOIN totals t USING (run_id)
"""

TOKEN_CONFUSIONS = """
SELECT run_id, ref_token, coalesce(hyp_token, '(ended)') AS hyp_token, count(*) AS n,
       list(sent_id ORDER BY sent_id)[1:5] AS example_sent_ids,
       avg(ref_rank) AS mean_ref_rank
FROM sentence_errors
WHERE stage NOT IN ('correct', 'no_reference') AND ref_token IS NOT NULL
GROUP BY ALL
"""


_FREQ = TOKEN_FREQUENCY.sql("f.f")
_LEN = SOURCE_LENGTH.sql("src_len")

# ``{run}`` is the run filter: ``true`` in the view, ``run_id = $run`` for one run (``mart_sql``), so
# every scan is pruned to the run's files. Counts are taken as if every sentence had produced its
# reference, then corrected by the few sentences that diverged: no (sentence, token) aggregation
# over the whole step tables.
_BUCKET_BASE = """
WITH training AS (
    SELECT run_id, neighbours_run AS train_run FROM runs WHERE {run}),  -- the run's recorded training run
buckets AS (
    SELECT tr.run_id, f.token,
           {freq_bucket} AS bucket, {freq_order} AS bucket_order
    FROM training tr
    JOIN (SELECT run_id, token, count(*) AS f FROM reference_steps
          WHERE run_id IN (SELECT train_run FROM training) GROUP BY ALL) f ON f.run_id = tr.train_run),
sents AS (
    SELECT run_id, sent_id, exact_match, ref_len, first_divergence_step IS NOT NULL AS diverged,
           {len_bucket} AS bucket, {len_order} AS bucket_order
    FROM sentences WHERE {run} AND ref_len IS NOT NULL),
ref AS NOT MATERIALIZED (SELECT run_id, sent_id, token FROM reference_steps WHERE {run} AND token <> '</s>'),
-- a sentence without a divergence step produced its reference token for token and so matches
-- every reference token: only the (few) diverged sentences need their hypothesis tokens counted
diverged AS (
    SELECT run_id, sent_id, token, count(*) FILTER (WHERE side = 0) AS n_ref,
           count(*) FILTER (WHERE side = 1) AS n_hyp
    FROM (SELECT *, 0 AS side FROM ref
          UNION ALL
          SELECT run_id, sent_id, token, 1 FROM target_steps WHERE {run} AND token <> '</s>')
    SEMI JOIN (SELECT run_id, sent_id FROM sents WHERE diverged) USING (run_id, sent_id)
    GROUP BY ALL),
-- counts over every sentence as if it matched its reference, then corrected by the diverged ones
fix AS (
    SELECT run_id, sent_id, token, -n_ref + n_hyp AS d_hyp, -n_ref + least(n_ref, n_hyp) AS d_matched
    FROM diverged)"""
BUCKET_ACCURACY = (
    _BUCKET_BASE
    + """,
by_token AS (
    SELECT run_id, token, sum(n_ref) AS ref_tokens, sum(n_ref + d_hyp) AS hyp_tokens,
           sum(n_ref + d_matched) AS matched
    FROM (SELECT run_id, token, count(*) AS n_ref, 0 AS d_hyp, 0 AS d_matched FROM ref GROUP BY ALL
          UNION ALL
          SELECT run_id, token, 0, sum(d_hyp), sum(d_matched) FROM fix GROUP BY ALL)
    GROUP BY ALL),
by_length AS (
    SELECT run_id, bucket, sum(n_ref) AS ref_tokens, sum(n_ref + d_hyp) AS hyp_tokens,
           sum(n_ref + d_matched) AS matched
    FROM (SELECT s.run_id, s.bucket, sum(s.ref_len - coalesce(e.n, 0)) AS n_ref, 0 AS d_hyp, 0 AS d_matched
          FROM sents s LEFT JOIN (SELECT run_id, sent_id, count(*) AS n FROM reference_steps
                                  WHERE {run} AND token = '</s>' GROUP BY ALL) e USING (run_id, sent_id)
          GROUP BY ALL
          UNION ALL
          SELECT s.run_id, s.bucket, 0, sum(d_hyp), sum(d_matched)
          FROM fix f JOIN sents s USING (run_id, sent_id) GROUP BY ALL)
    GROUP BY ALL),
stats AS (
    SELECT t.run_id, 'ref_token_frequency' AS bucketing,
           CASE WHEN tr.train_run IS NULL THEN 'no training run' ELSE coalesce(b.bucket, '0') END AS bucket,
           CASE WHEN tr.train_run IS NULL THEN -1 ELSE coalesce(b.bucket_order, 0) END AS bucket_order,
           sum(t.ref_tokens)::BIGINT AS ref_tokens, sum(t.hyp_tokens)::BIGINT AS hyp_tokens,
           sum(t.matched)::BIGINT AS matched,
           NULL::BIGINT AS sentences, NULL::DOUBLE AS exact_match
    FROM by_token t JOIN training tr USING (run_id) LEFT JOIN buckets b USING (run_id, token) GROUP BY ALL
    UNION ALL
    SELECT s.run_id, 'source_length', s.bucket, s.bucket_order, coalesce(l.ref_tokens, 0)::BIGINT,
           coalesce(l.hyp_tokens, 0)::BIGINT, coalesce(l.matched, 0)::BIGINT, s.sentences, s.exact_match
    FROM (SELECT run_id, bucket, bucket_order, count(*) AS sentences, avg(exact_match::INT) AS exact_match
          FROM sents GROUP BY ALL) s
    LEFT JOIN by_length l USING (run_id, bucket))
SELECT *, matched / nullif(hyp_tokens, 0) AS precision, matched / nullif(ref_tokens, 0) AS recall,
       2 * matched / nullif(hyp_tokens + ref_tokens, 0) AS f_measure
FROM stats
"""
)
# the same counts per sentence (what bucket_accuracy sums), for bootstrap intervals over sentences
SENTENCE_BUCKETS = (
    _BUCKET_BASE
    + """,
per_token AS (
    SELECT run_id, sent_id, token, count(*) AS n_ref, 0 AS d_hyp, 0 AS d_matched FROM ref GROUP BY ALL
    UNION ALL
    SELECT run_id, sent_id, token, 0, d_hyp, d_matched FROM fix)
SELECT p.run_id, p.sent_id, 'ref_token_frequency' AS bucketing,
       CASE WHEN tr.train_run IS NULL THEN 'no training run' ELSE coalesce(b.bucket, '0') END AS bucket,
       CASE WHEN tr.train_run IS NULL THEN -1 ELSE coalesce(b.bucket_order, 0) END AS bucket_order,
       sum(p.n_ref)::BIGINT AS ref_tokens, sum(p.n_ref + p.d_hyp)::BIGINT AS hyp_tokens,
       sum(p.n_ref + p.d_matched)::BIGINT AS matched, NULL::BOOLEAN AS exact_match
FROM per_token p JOIN training tr USING (run_id) LEFT JOIN buckets b USING (run_id, token)
GROUP BY ALL
UNION ALL
SELECT s.run_id, s.sent_id, 'source_length', s.bucket, s.bucket_order,
       coalesce(sum(p.n_ref), 0)::BIGINT, coalesce(sum(p.n_ref + p.d_hyp), 0)::BIGINT,
       coalesce(sum(p.n_ref + p.d_matched), 0)::BIGINT, s.exact_match
FROM sents s LEFT JOIN per_token p USING (run_id, sent_id)
GROUP BY ALL
"""
)


def _with_buckets(sql: str) -> str:
    return (
        sql.replace("{freq_bucket}", _FREQ[0])
        .replace("{freq_order}", _FREQ[1])
        .replace("{len_bucket}", _LEN[0])
        .replace("{len_order}", _LEN[1])
    )


# aggregate the source tokens per sentence first, then join the (far fewer) sentences
ATTENTION_COVERAGE = f"""
WITH tau AS NOT MATERIALIZED (
    SELECT run_id, coalesce(TRY_CAST(json_extract(options, '$.taxonomy.coverage') AS DOUBLE), 0.3) AS tau
    FROM runs),
cov AS NOT MATERIALIZED (
    SELECT st.run_id, st.sent_id, count(*) AS src_tokens,
           count(*) FILTER (WHERE st.attention_received < tau.tau) AS under_covered,
           min(st.attention_received) AS min_received, max(st.attention_received) AS max_received,
           any_value(tau.tau) AS threshold
    FROM source_tokens st JOIN tau USING (run_id) GROUP BY st.run_id, st.sent_id)
SELECT c.run_id, c.sent_id, {STAGE_SQL} AS stage, c.src_tokens, c.under_covered,
       1 - c.under_covered / c.src_tokens AS coverage, c.min_received, c.max_received, c.threshold
FROM cov c JOIN sentences s USING (run_id, sent_id)
"""

MARTS: dict[str, str] = {
    "sentence_errors": SENTENCE_ERRORS,
    "error_summary": ERROR_SUMMARY,
    "token_confusions": TOKEN_CONFUSIONS,
    "bucket_accuracy": _with_buckets(BUCKET_ACCURACY),
    "sentence_buckets": _with_buckets(SENTENCE_BUCKETS),
    "attention_coverage": ATTENTION_COVERAGE,
    "attention_attribution": ATTENTION_ATTRIBUTION,
    "attention_attribution_summary": ATTENTION_ATTRIBUTION_SUMMARY,
}


def mart_sql(name: str, run_filter: str = "true") -> str:
    """The mart's query, with ``run_filter`` in every scan of a mart that takes one."""
    return MARTS[name].replace("{run}", run_filter)


def takes_run_filter(name: str) -> bool:
    return "{run}" in MARTS[name]


def mart_statements() -> list[str]:
    return [f"CREATE OR REPLACE VIEW {name} AS {mart_sql(name)}" for name in MARTS]
