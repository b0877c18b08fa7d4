"""Comparing two runs: outcomes against a direct count, scores against sacrebleu, refusals."""

from __future__ import annotations

import polars as pl
import pytest
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from tests.helpers import run_cli
from warehouse import open_warehouse
from warehouse.compare import PairError, check_pair, compare_runs, same_corpus_runs


@pytest.fixture(scope="module")
def wh(compare_warehouse_dir):
    with open_warehouse(compare_warehouse_dir) as w:
        yield w


def direct_outcomes(root, a: str, b: str) -> dict[str, set[int]]:
    """Each outcome's sentence ids, counted with polars from the runs' Parquet files."""

    def sentences(run: str) -> pl.DataFrame:
        df = pl.read_parquet(root / f"tables/sentences/run={run}/*.parquet")
        return df.filter(pl.col("reference").is_not_null()).select("sent_id", "exact_match")

    pairs = sentences(a).join(sentences(b), on="sent_id", suffix="_b")
    ea, eb = pl.col("exact_match"), pl.col("exact_match_b")
    rules = {"fixed": ~ea & eb, "broken": ea & ~eb, "both_wrong": ~ea & ~eb, "both_right": ea & eb}
    return {o: set(pairs.filter(rule)["sent_id"].to_list()) for o, rule in rules.items()}


def test_outcomes_equal_a_direct_count(wh, compare_warehouse_dir) -> None:
    c = compare_runs(wh, "greedy", "beam", samples=200)
    direct = direct_outcomes(compare_warehouse_dir, "greedy", "beam")
    assert c.counts == {o: len(ids) for o, ids in direct.items()}
    assert set(c.fixed["sent_id"]) == direct["fixed"] and set(c.broken["sent_id"]) == direct["broken"]
    # the planted references make every kind that can occur occur (fixed: id % 4 == 1; broken: 0, 3)
    assert direct["fixed"] and direct["broken"] and direct["both_wrong"]
    assert {i % 4 for i in direct["fixed"]} == {1} and {i % 4 for i in direct["broken"]} <= {0, 3}
    assert sum(c.counts.values()) == 48
    # the other way round, fixed and broken swap
    back = compare_runs(wh, "beam", "greedy", samples=200)
    assert back.counts["fixed"] == c.counts["broken"] and back.counts["broken"] == c.counts["fixed"]


def test_scores_are_sacrebleus(wh) -> None:
    c = compare_runs(wh, "greedy", "beam")
    scores = {r["metric"]: r for r in c.scores.iter_rows(named=True)}
    runs = {r["run_id"]: r for r in wh.runs().iter_rows(named=True)}
    for metric, column in (
        ("BLEU", "bleu"),
        ("chrF", "chrf"),
        ("TER", "ter"),
        ("exact_match", "exact_match"),
    ):
        s = scores[metric]
        assert s["a"] == pytest.approx(runs["greedy"][column], abs=1e-3)
        assert s["b"] == pytest.approx(runs["beam"][column], abs=1e-3)
        assert s["delta"] == pytest.approx(s["b"] - s["a"])
        assert s["delta_low"] <= s["delta"] <= s["delta_high"]
        assert 0 < s["p_value"] <= 1
    assert scores["TER"]["lower_is_better"] and not scores["BLEU"]["lower_is_better"]
    p = c.pairs
    _, paired = PairedTest(
        [("greedy", p["hyp_a"].to_list()), ("beam", p["hyp_b"].to_list())],
        {"BLEU": BLEU(), "chrF": CHRF()},
        [p["reference"].to_list()],
        test_type="bs",
        n_samples=1000,
    )()
    assert scores["BLEU"]["p_value"] == paired["BLEU"][1].p_value
    assert scores["chrF"]["p_value"] == paired["chrF2"][1].p_value


def test_a_run_against_itself_changes_nothing(wh) -> None:
    c = compare_runs(wh, "greedy", "greedy", samples=100)
    assert (c.scores["delta"] == 0).all() and (c.scores["p_value"] == 1).all()
    assert c.counts["fixed"] == c.counts["broken"] == 0
    assert c.confusions_gone.height == c.confusions_new.height == 0


def test_runs_over_different_corpora_are_refused(wh) -> None:
    assert same_corpus_runs(wh, "greedy") == ["beam"]
    assert same_corpus_runs(wh, "plain-beam") == ["plain-greedy"]
    with pytest.raises(PairError, match="different corpora") as e:
        compare_runs(wh, "greedy", "plain-beam")
    assert "task:dates:test:48" in str(e.value) and "planted.tsv" in str(e.value)
    for a, b, message in (
        ("greedy", "nope", "no complete run 'nope'"),
        (None, "beam", "run A is missing"),
        ("greedy", ["beam", "beam"], "more than once"),
    ):
        with pytest.raises(PairError, match=message):
            check_pair(wh, a, b)


def test_cli_compare_prints_the_same_counts(wh, compare_warehouse_dir) -> None:
    c = compare_runs(wh, "greedy", "beam", samples=100)
    out = run_cli("compare", "--warehouse", str(compare_warehouse_dir), "greedy", "beam", "--samples", "100")
    assert out.returncode == 0, out.stderr
    assert f"fixed in B: {c.counts['fixed']}   broken in B: {c.counts['broken']}" in out.stdout
    assert "TER" in out.stdout and "(lower is better)" in out.stdout
    refused = run_cli("compare", "--warehouse", str(compare_warehouse_dir), "greedy", "plain-beam")
    assert refused.returncode != 0 and "different corpora" in refused.stderr
