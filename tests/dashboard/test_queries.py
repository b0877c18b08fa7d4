"""Dashboard query and figure functions, without a browser."""

import plotly.graph_objects as go
import polars as pl
import pytest

from dashboard import figures, queries
from warehouse import open_warehouse


@pytest.fixture(scope="module")
def wh(warehouse_dir):
    with open_warehouse(warehouse_dir) as w:
        yield w


def test_overview_queries_agree_with_the_sentences(wh) -> None:
    stages = queries.stage_counts(wh, "beam4")
    assert stages["n"].sum() == 48
    hist = queries.histogram(wh, "beam4", "chrf", 5)
    assert hist["n"].sum() == 48
    lengths = queries.histogram(wh, "beam4", "src_len", 5)
    assert lengths["n"].sum() == 48
    with pytest.raises(ValueError):
        queries.histogram(wh, "beam4", "source; DROP TABLE x", 5)
    worst = queries.worst(wh, "beam4")
    assert (worst["stage"] != "correct").all()
    assert worst["chrf"].is_sorted()


@pytest.mark.parametrize(
    "filters,check",
    [
        (queries.Filters(), lambda df: True),
        (queries.Filters(stage="correct"), lambda df: (df["stage"] == "correct").all()),
        (queries.Filters(min_chrf=50, max_chrf=90), lambda df: df["chrf"].is_between(50, 90).all()),
        (queries.Filters(min_len=10, max_len=15), lambda df: df["src_len"].is_between(10, 15).all()),
        (queries.Filters(search_error=False), lambda df: (~df["is_search_error"]).all()),
        (
            queries.Filters(text="19"),
            lambda df: (
                df.select(
                    pl.col("source").str.contains("19", literal=True)
                    | pl.col("reference").str.contains("19", literal=True)
                    | pl.col("hypothesis").str.contains("19", literal=True)
                )
                .to_series()
                .all()
            ),
        ),
    ],
)
def test_explorer_filters(wh, filters, check) -> None:
    rows, total = queries.explore(wh, "beam4", filters, 0, 1000)
    assert rows.height == total
    assert check(rows)


def test_explorer_pages_and_sorts_on_the_server(wh) -> None:
    f = queries.Filters(sort=[("chrf", "asc")])
    first, total = queries.explore(wh, "beam4", f, 0, 10)
    second, _ = queries.explore(wh, "beam4", f, 10, 20)
    everything, _ = queries.explore(wh, "beam4", f, 0, 100)
    assert total == 48 and first.height == 10
    assert pl.concat([first, second]).equals(everything.head(20))
    assert everything["chrf"].is_sorted()
    injected = queries.Filters(sort=[("chrf; DROP VIEW runs", "asc"), ("sent_id", "desc")])
    rows, _ = queries.explore(wh, "beam4", injected, 0, 5)
    assert rows["sent_id"].to_list() == sorted(rows["sent_id"].to_list(), reverse=True)


def test_confusion_filter_finds_the_sentences_of_a_confusion(wh) -> None:
    conf = queries.confusions(wh, "beam4", top=1).row(0, named=True)
    rows, total = queries.explore(
        wh, "beam4", queries.Filters(ref_token=conf["ref_token"], hyp_token=conf["hyp_token"]), 0, 100
    )
    assert total == conf["n"]
    assert sorted(rows["sent_id"].to_list())[:5] == conf["example_sent_ids"]


def test_sentence_view_and_its_figures(wh) -> None:
    view = queries.sentence_view(wh, "beam4", 3)
    assert view.sentence["sent_id"] == 3
    src = view.source_tokens["token"].to_list()
    hyp = view.target_steps["token"].to_list()
    mean = queries.attention_matrix(view.attention, "hyp")
    assert len(mean) == len(hyp) and all(len(row) == len(src) for row in mean)
    assert all(abs(sum(row) - 1) < 1e-3 for row in mean)  # float16 weights (schemas.tables)
    assert len(queries.layer_heads(view.attention)) == 8
    one_head = queries.attention_matrix(view.attention, "ref", 1, 3)
    assert len(one_head) == view.reference_steps.height
    fig = figures.attention_heatmap(mean, src, hyp, "t", view.sentence["first_divergence_step"])
    assert isinstance(fig, go.Figure) and fig.data[0].z is not None
    topk = figures.topk_figure(view.target_steps, view.reference_steps["token"].to_list(), "k")
    assert len(topk.data[0].z) == 5
    tree = figures.beam_tree(view.beam_nodes, "b")
    best = [t for t in tree.data if t.line is not None and t.line.width == 3][0]
    assert len([x for x in best.x if x is not None]) == 2 * (len(hyp))  # one edge per best-path step
    assert queries.sentence_view(wh, "beam4", 999_999) is None


def test_stage_bar_carries_its_stage_for_click_through(wh) -> None:
    fig = figures.stage_bar(queries.stage_counts(wh, "beam4"))
    assert list(fig.data[0].customdata) == list(fig.data[0].x)
    assert figures.step_highlight(2, vertical=True)["x0"] == 1.5


def test_attribution_matrix_and_close_words(wh) -> None:
    """The sentence page's attribution heatmaps read the sentence's rows; close words come from the
    run's word_neighbours table with the vocabulary's tokens."""
    from warehouse.attribution import attribution_matrix, sentence_attribution
    from warehouse.words import close_words

    view = queries.sentence_view(wh, "greedy", 3)
    rows = sentence_attribution(wh, "greedy", 3)
    n_steps, n_src = view.target_steps.height, view.source_tokens.height
    assert set(rows["method"]) == {"ig"} and rows.filter(pl.col("side") == "src").height == n_steps * n_src
    z = attribution_matrix(rows, "src", n_steps, n_src)
    assert all(v is not None for row in z for v in row)
    tgt = attribution_matrix(rows, "tgt", n_steps, n_steps)
    assert all((v is None) == (p > t) for t, row in enumerate(tgt) for p, v in enumerate(row))
    assert sentence_attribution(wh, "beam4", 3).height == 0  # a run without attribution
    token_id = view.target_steps["token_id"][0]
    words = close_words(wh, "greedy", "tgt", token_id)
    assert words["rank"].to_list() == list(range(1, min(10, words.height) + 1)) and words.height >= 5
    assert words["similarity"].is_sorted(descending=True) and words["token"].null_count() == 0
    assert view.target_steps["token"][0] not in words["token"].to_list()  # not itself
