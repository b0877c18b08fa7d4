"""State clusters in the explorer and the overview, and projections, without a browser."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dashboard import figures, queries
from dashboard.maps import parse_projection
from schemas import ConfigError
from warehouse import open_warehouse
from warehouse.projections import PROJECTIONS, check_projection, project
from warehouse.states import corpus_map


@pytest.fixture(scope="module")
def wh(warehouse_dir):
    with open_warehouse(warehouse_dir) as w:
        yield w


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_cluster_filter_selects_exactly_the_clusters_sentences(wh) -> None:
    clusters = queries.state_clusters(wh, "beam4")
    assert clusters.height >= 2 and clusters["cluster"].to_list() == list(range(1, clusters.height + 1))
    members = wh.sql("SELECT sent_id, cluster FROM state_cluster_members WHERE run_id = 'beam4'")
    for row in clusters.iter_rows(named=True):
        rows, total = queries.explore(wh, "beam4", queries.Filters(cluster=row["cluster"]), 0, 1000)
        want = sorted(members.filter(pl.col("cluster") == row["cluster"])["sent_id"].to_list())
        assert total == row["n_states"] and sorted(rows["sent_id"].to_list()) == want
        wrong = rows.filter(pl.col("stage") != "correct").height
        assert wrong == row["n_wrong"]
    # combined with another filter, and parameterised (a value is never SQL)
    rows, _ = queries.explore(wh, "beam4", queries.Filters(cluster=1, stage="correct"), 0, 1000)
    assert (rows["stage"] == "correct").all()
    page, count, params = queries.explorer_sql(queries.Filters(cluster=1), "beam4")
    assert "cluster = ?" in page and params[-2:] == ["beam4", 1]


def test_cluster_ids_from_the_url(wh) -> None:
    import dash

    dash.Dash(__name__, use_pages=True, pages_folder="")  # a page module registers itself with an app
    from dashboard.pages.sentences import parse_filters

    assert parse_filters({"cluster": "2"}).cluster == 2
    assert parse_filters({"cluster": "x; DROP"}).cluster is None
    n = queries.state_clusters(wh, "beam4").height
    assert queries.cluster_problem(wh, "beam4", 1) is None
    assert queries.cluster_problem(wh, "beam4", n + 1) == (
        f"run beam4 has no state cluster {n + 1}: its clusters are numbered 1 to {n}"
    )
    assert "numbered 1 to" in queries.cluster_problem(wh, "beam4", 0)
    rows, total = queries.explore(wh, "beam4", queries.Filters(cluster=n + 1), 0, 10)
    assert total == 0 and rows.height == 0


def test_projection_names() -> None:
    assert [check_projection(n) for n in ("umap", "UMAP", "t-SNE", "tsne", None, "")] == [
        "umap", "umap", "tsne", "tsne", "pca", "pca"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown projection 'isomap'; choose one of pca"):
        check_projection("isomap")
    method, message = parse_projection("<b>isomap</b>")
    assert method is None and "unknown projection" in message


@pytest.mark.parametrize("method", list(PROJECTIONS))
def test_projections_are_seeded_and_cached(method, cache) -> None:
    rng = np.random.default_rng(0)
    axis = np.eye(16) * 8  # two groups of states pointing two ways
    x = np.concatenate([axis[0] + rng.normal(size=(30, 16)), axis[1] + rng.normal(size=(30, 16))])
    x = x.astype(np.float32)
    xy = project(x, method)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    if method != "pca":
        assert len(list((cache / "projections").glob("*.npy"))) == 1
        (cache / "projections").rename(cache / "moved")  # computed again: the same picture
    assert np.array_equal(project(x, method), xy)
    # the two groups stay apart: every point is nearer its own group's centre
    centres = np.stack([xy[:30].mean(0), xy[30:].mean(0)])
    own = np.linalg.norm(xy[:, None] - centres[None], axis=2).argmin(1)
    assert (own == np.repeat([0, 1], 30)).all()


def test_corpus_map_by_projection(wh) -> None:
    pca = corpus_map(wh, "beam4", projection="pca")
    tsne = corpus_map(wh, "beam4", projection="tsne")
    assert pca.select("sent_id", "step").equals(tsne.select("sent_id", "step"))
    assert not np.allclose(pca["x"].to_numpy(), tsne["x"].to_numpy())
    fig = figures.corpus_map(tsne, "t", ("t-SNE 1", "t-SNE 2"))
    assert fig.layout.xaxis.title.text == "t-SNE 1"
    with pytest.raises(ConfigError):
        corpus_map(wh, "beam4", projection="nope")
