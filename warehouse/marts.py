"""Marts: DuckDB views built on the table views, one named question each.

- ``sentence_errors``: one row per sentence: its stage (``correct``, ``no_reference`` or the
  blamed stage), tags, and what happened at the first divergence step.
- ``error_summary``: per run, counts and shares of every stage and tag.
- ``token_confusions``: reference token -> produced token at the divergence step, with counts
  and example sentence ids.
- ``bucket_accuracy``: token precision / recall / F-measure (as compare-mt) by the reference
  token's frequency in the training run and by source-length bucket.
- ``attention_coverage``: per sentence, how much of the source the hypothesis attended
  (threshold: the run's ``taxonomy.coverage``).
"""

from __future__ import annotations

_STAGE = (
    "CASE WHEN s.reference IS NULL THEN 'no_reference' WHEN s.exact_match THEN 'correct' "
    "ELSE s.blamed_stage END"
)

# the step tables are joined at the divergence step only (inline, so the run filter reaches the scans)
SENTENCE_ERRORS = f"""
SELECT s.run_id, s.sent_id, s.split, s.source, s.reference, s.hypothesis,
       s.src_len, s.ref_len, s.hyp_len,
       {_STAGE} AS stage,
       coalesce(s.error_tags, []::VARCHAR[]) AS error_tags,
       s.is_search_error, s.first_divergence_step,
       r.token AS ref_token, t.token AS hyp_token, r.rank AS ref_rank, r.prob AS ref_prob,
       r.top1_prob AS top1_prob, r.attn_entropy AS attn_entropy, r.attn_argmax_src_pos AS attn_src_pos,
       s.hyp_score, s.ref_score, s.bleu, s.chrf, s.ter,
       s.nn_encoder_agreement, s.nn_decoder_agreement, s.nn_reference_agreement
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
    SELECT s.run_id, {_STAGE} AS stage, coalesce(s.error_tags, []::VARCHAR[]) AS error_tags FROM sentences s),
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

_TOKEN_COUNTS = """
ref AS (SELECT run_id, sent_id, token, count(*) AS n_ref FROM reference_steps
        WHERE token <> '</s>' GROUP BY ALL),
hyp AS (SELECT run_id, sent_id, token, count(*) AS n_hyp FROM target_steps
        WHERE token <> '</s>' GROUP BY ALL),
counts AS (
    SELECT coalesce(ref.run_id, hyp.run_id) AS run_id, coalesce(ref.sent_id, hyp.sent_id) AS sent_id,
           coalesce(ref.token, hyp.token) AS token,
           coalesce(n_ref, 0) AS n_ref, coalesce(n_hyp, 0) AS n_hyp,
           least(coalesce(n_ref, 0), coalesce(n_hyp, 0)) AS matched
    FROM ref FULL JOIN hyp ON ref.run_id = hyp.run_id AND ref.sent_id = hyp.sent_id AND ref.token = hyp.token
    WHERE coalesce(ref.run_id, hyp.run_id) IN (SELECT run_id FROM sentences WHERE reference IS NOT NULL))
"""

BUCKET_ACCURACY = f"""
WITH {_TOKEN_COUNTS},
training AS (
    SELECT r.run_id, coalesce(r.neighbours_run, (
        SELECT t.run_id FROM runs t
        WHERE t.split = 'train' AND t.model_hash = r.model_hash AND t.run_id <> r.run_id
        ORDER BY t.created_at DESC LIMIT 1)) AS train_run
    FROM runs r),
freq AS (SELECT run_id AS train_run, token, count(*) AS f FROM reference_steps GROUP BY ALL),
by_freq AS (
    SELECT c.*, CASE WHEN tr.train_run IS NULL THEN 'no training run'
                     WHEN coalesce(f.f, 0) = 0 THEN '0'
                     WHEN f.f < 10 THEN '1-9' WHEN f.f < 100 THEN '10-99'
                     WHEN f.f < 1000 THEN '100-999' WHEN f.f < 10000 THEN '1000-9999'
                     ELSE '10000+' END AS bucket,
           CASE WHEN tr.train_run IS NULL THEN -1 ELSE floor(log10(coalesce(f.f, 0) + 1)) END AS bucket_order
    FROM counts c JOIN training tr USING (run_id)
    LEFT JOIN freq f ON f.train_run = tr.train_run AND f.token = c.token),
src_bucket AS (
    SELECT run_id, sent_id, exact_match,
           CASE WHEN src_len < 10 THEN '<10' WHEN src_len < 20 THEN '10-19' WHEN src_len < 30 THEN '20-29'
                WHEN src_len < 40 THEN '30-39' WHEN src_len < 60 THEN '40-59' ELSE '60+' END AS bucket,
           least(src_len // 10, 6) AS bucket_order
    FROM sentences WHERE reference IS NOT NULL),
by_len AS (
    SELECT c.*, b.bucket, b.bucket_order FROM counts c JOIN src_bucket b USING (run_id, sent_id)),
stats AS (
    SELECT run_id, 'ref_token_frequency' AS bucketing, bucket, bucket_order,
           sum(n_ref) AS ref_tokens, sum(n_hyp) AS hyp_tokens, sum(matched) AS matched,
           count(DISTINCT sent_id) AS sentences
    FROM by_freq GROUP BY ALL
    UNION ALL
    SELECT run_id, 'source_length', bucket, bucket_order,
           sum(n_ref), sum(n_hyp), sum(matched), count(DISTINCT sent_id)
    FROM by_len GROUP BY ALL)
SELECT s.*, matched / nullif(hyp_tokens, 0) AS precision, matched / nullif(ref_tokens, 0) AS recall,
       2 * matched / nullif(hyp_tokens + ref_tokens, 0) AS f_measure,
       (SELECT avg(exact_match::INT) FROM src_bucket b
        WHERE s.bucketing = 'source_length' AND b.run_id = s.run_id AND b.bucket = s.bucket) AS exact_match
FROM stats s
"""

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
SELECT c.run_id, c.sent_id, {_STAGE} AS stage, c.src_tokens, c.under_covered,
       1 - c.under_covered / c.src_tokens AS coverage, c.min_received, c.max_received, c.threshold
FROM cov c JOIN sentences s USING (run_id, sent_id)
"""

MARTS: dict[str, str] = {
    "sentence_errors": SENTENCE_ERRORS,
    "error_summary": ERROR_SUMMARY,
    "token_confusions": TOKEN_CONFUSIONS,
    "bucket_accuracy": BUCKET_ACCURACY,
    "attention_coverage": ATTENTION_COVERAGE,
}


def mart_statements() -> list[str]:
    return [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in MARTS.items()]
