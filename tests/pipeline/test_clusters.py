"""State clusters: a planted region of wrong states ranks first; ranking ties break the same way
whatever k-means' labels; the tables written when a run completes are the recomputed ones."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.clusters import (
    CLUSTER_TABLES,
    ClusterConfig,
    choose_states,
    kmeans_labels,
    rank_clusters,
    run_clusters,
)
from pipeline.writer.run import RunWriter
from schemas import TABLES
from warehouse import open_warehouse


def _members(wrong: list[bool], produced: list[str] | None = None) -> pl.DataFrame:
    n = len(wrong)
    produced = produced or ["a"] * n
    return pl.DataFrame(
        {
            "sent_id": list(range(n)),
            "step": [0] * n,
            "is_wrong": wrong,
            "produced": produced,
            "reference": ["r"] * n,
        }  # fmt: skip
    )


def test_a_planted_region_of_wrong_states_ranks_first() -> None:
    rng = np.random.default_rng(1)
    d = 32
    axis = np.eye(d)
    correct = axis[1] * 10 + rng.normal(scale=3, size=(300, d))  # a wide region, mostly correct ...
    planted = axis[0] * 10 + rng.normal(scale=0.5, size=(24, d))  # ... and a tight, distinct one
    vectors = np.concatenate([correct, planted])
    wrong = [bool(i % 10 == 0) for i in range(300)] + [True] * 24  # 30 wrong in the mass, 24 planted
    produced = ["x"] * 300 + ["7"] * 20 + ["3"] * 4
    members = _members(wrong, produced)
    cfg = ClusterConfig()
    tables = rank_clusters("r", members, kmeans_labels(vectors, cfg), cfg)
    clusters = pl.from_arrow(tables["state_clusters"])
    first = clusters.row(0, named=True)
    assert first["cluster"] == 1
    assert (first["n_states"], first["n_wrong"], first["error_rate"]) == (24, 24, 1.0)
    assert first["top_produced"] == ["7", "3"] and first["example_sent_ids"] == [300, 301, 302, 303, 304]
    assert clusters["cluster"].to_list() == list(range(1, clusters.height + 1))
    assert clusters["error_rate"].to_list() == sorted(clusters["error_rate"].to_list(), reverse=True)
    assert clusters.height == cfg.k(324)
    m = pl.from_arrow(tables["state_cluster_members"])
    assert sorted(m.filter(pl.col("cluster") == 1)["sent_id"].to_list()) == list(range(300, 324))
    assert m.height == 324 and clusters["n_states"].sum() == 324 and clusters["n_wrong"].sum() == 54


def test_ties_break_by_wrong_then_size_then_first_member_whatever_the_labels() -> None:
    # label: (members, wrong): A 1/2, B 2/4 (same rate, more wrong), C 1/2 with a later first member,
    # D 0/1 and E 0/3 (rate 0: the larger first)
    spec = {"A": [True, False], "B": [True, True, False, False], "C": [False, True], "D": [False],
            "E": [False, False, False]}  # fmt: skip
    wrong = [w for ws in spec.values() for w in ws]
    names = [k for k, ws in spec.items() for _ in ws]
    members = _members(wrong)
    want = {"B": 1, "A": 2, "C": 3, "E": 4, "D": 5}
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        labels = np.array([perm["ABCDE".index(n)] for n in names])
        t = rank_clusters("r", members, labels)
        m = pl.from_arrow(t["state_cluster_members"])
        got = {n: c for n, c in zip(names, m.sort("sent_id")["cluster"].to_list(), strict=True)}
        assert got == want
        assert pl.from_arrow(t["state_clusters"])["n_states"].to_list() == [4, 2, 2, 3, 1]
        assert t["state_clusters"].schema == TABLES["state_clusters"]
        assert t["state_cluster_members"].schema == TABLES["state_cluster_members"]


def test_kmeans_is_seeded() -> None:
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert (kmeans_labels(x) == kmeans_labels(x)).all()


def test_chosen_states_divergence_for_wrong_a_random_step_for_the_rest() -> None:
    s = pl.DataFrame(
        {
            "sent_id": [3, 1, 2, 0],
            "reference": ["a", None, "c", "d"],
            "exact_match": [False, None, True, True],
            "first_divergence_step": [4, None, None, None],
            "ref_len": [9, None, 6, 7],
        }
    )
    chosen = choose_states(s)
    assert chosen["sent_id"].to_list() == [0, 2, 3]  # no reference: not clustered
    assert chosen.filter(pl.col("is_wrong"))["step"].to_list() == [4]
    assert all(0 <= st < n for st, n in zip(chosen["step"].to_list()[:2], [7, 6], strict=True))
    assert choose_states(s).equals(chosen)
    big = pl.DataFrame({"sent_id": range(50), "reference": ["a"] * 50, "exact_match": [True] * 50,
                        "first_divergence_step": [None] * 50, "ref_len": [5] * 50})  # fmt: skip
    sampled = choose_states(big, ClusterConfig(max_states=20))
    assert sampled.height == 20 and sampled["sent_id"].is_sorted()


@pytest.mark.parametrize("run", ["beam4", "greedy"])
def test_the_tables_of_a_traced_run_are_the_recomputed_ones(warehouse_dir, run) -> None:
    written = {t: pq.read_table(warehouse_dir / "tables" / t / f"run={run}") for t in CLUSTER_TABLES}
    again = run_clusters(RunWriter(warehouse_dir, run))
    for t, table in written.items():
        assert table.equals(again[t]), t
    with open_warehouse(warehouse_dir) as wh:
        c = wh.sql("SELECT * FROM state_clusters WHERE run_id = ? ORDER BY cluster", [run])
        wrong = wh.sql(
            "SELECT count(*) FROM sentences WHERE run_id = ? AND reference IS NOT NULL AND NOT exact_match",
            [run],
        ).item()
        assert c.height >= 2 and c["n_wrong"].sum() == wrong and c["n_states"].sum() == 48
        bad = wh.sql(  # a wrong member's step is its sentence's divergence step
            "SELECT count(*) FROM state_cluster_members m JOIN sentences s USING (run_id, sent_id) "
            "WHERE m.run_id = ? AND m.is_wrong AND m.step <> s.first_divergence_step",
            [run],
        ).item()
        assert bad == 0
