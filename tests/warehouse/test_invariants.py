"""Invariants every traced run must satisfy, checked with SQL over the real warehouse."""

import pytest

from schemas import KEYS, TABLES
from warehouse import open_warehouse

RUNS = ["beam4", "greedy", "lstm"]


@pytest.fixture(scope="module")
def wh(warehouse_dir):
    with open_warehouse(warehouse_dir) as w:
        yield w


def test_all_runs_are_complete(wh) -> None:
    assert sorted(wh.run_ids()) == sorted(RUNS)
    counts = wh.sql("SELECT run_id, count(*) AS n FROM sentences GROUP BY run_id")
    assert dict(counts.iter_rows()) == {r: 48 for r in RUNS}


@pytest.mark.parametrize("table", [t for t in TABLES if t not in ("skipped", "blame_calibration")])
def test_keys_are_unique_and_not_null(wh, table) -> None:  # blame_calibration: test_calibration
    keys = ", ".join(KEYS[table])
    dup = wh.sql(f"SELECT {keys}, count(*) AS n FROM {table} GROUP BY ALL HAVING n > 1")
    assert dup.height == 0
    nulls = " OR ".join(f"{k} IS NULL" for k in KEYS[table])
    assert wh.sql(f"SELECT count(*) AS n FROM {table} WHERE {nulls}").item() == 0
    assert wh.sql(f"SELECT count(*) FROM {table}").item() > 0


def test_attention_rows_sum_to_one_per_step_layer_and_head(wh) -> None:
    sums = wh.sql("""
        SELECT run_id, sent_id, decoding, step, layer, head, sum(weight) AS total
        FROM attention GROUP BY ALL""")
    assert sums.height > 0
    assert (sums["total"] - 1.0).abs().max() < 1e-3  # weights are stored as float16
    per_head = sums.filter(sums["layer"] >= 0)
    assert per_head.height > 0 and set(per_head["run_id"]) == {"beam4"}
    layers = wh.sql("SELECT DISTINCT layer, head FROM attention WHERE run_id = 'beam4' AND layer >= 0")
    assert layers.height == 2 * 4  # 2 decoder layers x 4 heads of the tiny model


def test_attention_covers_every_source_token_of_every_step(wh) -> None:
    bad = wh.sql("""
        SELECT s.run_id, s.sent_id FROM sentences s
        JOIN (SELECT run_id, sent_id, decoding, count(DISTINCT step) AS steps, count(*) AS cells
              FROM attention WHERE layer = -1 GROUP BY ALL) a USING (run_id, sent_id)
        WHERE a.cells != a.steps * s.src_len
           OR a.steps != CASE a.decoding WHEN 'hyp' THEN s.hyp_len ELSE s.ref_len END""")
    assert bad.height == 0


def test_topk_is_descending_and_holds_the_chosen_token(wh) -> None:
    steps = wh.sql("SELECT token_id, prob, topk_token_ids, topk_probs FROM target_steps")
    for token_id, prob, ids, probs in steps.iter_rows():
        assert all(a >= b for a, b in zip(probs, probs[1:], strict=False))
        if token_id in ids:
            assert probs[ids.index(token_id)] == pytest.approx(prob, rel=1e-3)  # float16 top-k probs
        else:
            assert prob <= probs[-1] * (1 + 1e-3) + 1e-7


def test_best_path_matches_target_steps_and_spells_the_hypothesis(wh) -> None:
    path = wh.sql("""
        SELECT run_id, sent_id, step - 1 AS step, token_id, token_logprob FROM beam_nodes
        WHERE on_best_path AND step > 0 ORDER BY run_id, sent_id, step""")
    steps = wh.sql("""SELECT run_id, sent_id, step, token_id, logprob FROM target_steps
                      ORDER BY run_id, sent_id, step""")
    assert path.select("run_id", "sent_id", "step", "token_id").equals(
        steps.select("run_id", "sent_id", "step", "token_id")
    )
    assert (path["token_logprob"] - steps["logprob"]).abs().max() < 1e-5
    spelled = wh.sql("""
        SELECT s.run_id, s.sent_id, s.hypothesis,
               string_agg(CASE WHEN t.token = '</s>' THEN '' ELSE t.token END, '' ORDER BY t.step) AS spelled
        FROM sentences s JOIN target_steps t USING (run_id, sent_id) GROUP BY ALL""")
    assert (spelled["hypothesis"] == spelled["spelled"]).all()


def test_one_root_per_sentence_and_parents_exist(wh) -> None:
    roots = wh.sql(
        "SELECT run_id, sent_id, count(*) AS n FROM beam_nodes WHERE parent_id IS NULL GROUP BY ALL"
    )
    assert roots.height == 3 * 48 and (roots["n"] == 1).all()
    orphans = wh.sql("""
        SELECT c.* FROM beam_nodes c LEFT JOIN beam_nodes p
          ON p.run_id = c.run_id AND p.sent_id = c.sent_id AND p.node_id = c.parent_id
        WHERE c.parent_id IS NOT NULL AND p.node_id IS NULL""")
    assert orphans.height == 0


def test_reference_rank_one_everywhere_iff_greedy_reproduces_the_reference(wh) -> None:
    df = wh.sql("""
        SELECT s.sent_id, s.exact_match, bool_and(r.rank = 1) AS all_top1
        FROM sentences s JOIN reference_steps r USING (run_id, sent_id)
        WHERE s.run_id = 'greedy' GROUP BY ALL""")
    assert df.height == 48
    assert (df["exact_match"] == df["all_top1"]).all()


def test_search_errors_follow_the_definition(wh) -> None:
    df = wh.sql("SELECT exact_match, hyp_score, ref_score, is_search_error FROM sentences")
    for exact, hyp, ref, err in df.iter_rows():
        assert err == ((not exact) and ref > hyp)
    assert (
        wh.sql(
            "SELECT count(*) FROM sentences WHERE exact_match AND first_divergence_step IS NOT NULL"
        ).item()
        == 0
    )


def test_reference_steps_score_the_reference(wh) -> None:
    df = wh.sql("""
        SELECT run_id, sent_id, s.ref_logprob, sum(r.logprob) AS total, s.ref_len, count(*) AS n
        FROM sentences s JOIN reference_steps r USING (run_id, sent_id) GROUP BY ALL""")
    assert (df["ref_len"] == df["n"]).all()
    assert (df["ref_logprob"] - df["total"]).abs().max() < 1e-3
