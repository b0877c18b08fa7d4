"""The compare pages' queries, filter and figures, without a browser."""

from __future__ import annotations

import pytest

from dashboard import figures, queries
from dashboard.stages import first_difference
from tests.warehouse.test_compare import direct_outcomes
from warehouse import open_warehouse
from warehouse.compare import OUTCOMES, compare_runs
from warehouse.sandbox import SafeSQL


@pytest.fixture(scope="module")
def wh(compare_warehouse_dir):
    with open_warehouse(compare_warehouse_dir) as w:
        yield w


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_the_explorer_filter_returns_exactly_the_outcomes_sentences(
    wh, compare_warehouse_dir, outcome
) -> None:
    want = direct_outcomes(compare_warehouse_dir, "greedy", "beam")[outcome]
    rows, total = queries.explore(wh, "greedy", queries.Filters(vs="beam", outcome=outcome), 0, 1000)
    assert set(rows["sent_id"]) == want and total == len(want)
    # with other filters and the other way round
    f = queries.Filters(vs="beam", outcome=outcome, min_len=8)
    rows, _ = queries.explore(wh, "greedy", f, 0, 1000)
    assert set(rows["sent_id"]) == {s for s in want if s in set(rows["sent_id"])}
    assert (rows["src_len"] >= 8).all()
    swapped = {"fixed": "broken", "broken": "fixed"}.get(outcome, outcome)
    rows, _ = queries.explore(wh, "beam", queries.Filters(vs="greedy", outcome=swapped), 0, 1000)
    assert set(rows["sent_id"]) == want


def test_the_outcome_filter_with_a_free_sql_condition(wh, compare_warehouse_dir) -> None:
    want = direct_outcomes(compare_warehouse_dir, "greedy", "beam")["broken"]
    f = queries.Filters(vs="beam", outcome="broken", where="src_len > 0")
    rows, total = queries.explore(wh, "greedy", f, 0, 1000, SafeSQL(wh.root))
    assert set(rows["sent_id"]) == want and total == len(want)


def test_the_counts_and_the_explorer_agree(wh) -> None:
    c = compare_runs(wh, "greedy", "beam", samples=100)
    for outcome, n in c.counts.items():
        assert queries.explore(wh, "greedy", queries.Filters(vs="beam", outcome=outcome), 0, 1)[1] == n


@pytest.fixture(scope="module")
def client(wh):
    """The app over the compare warehouse, called as a browser's renderer calls it (no server)."""
    from bench.dash_client import DashClient, FlaskTransport
    from dashboard.app import create_app

    c = DashClient(FlaskTransport(create_app(wh).server.test_client()))
    c.load_dependencies()
    return c


def page_text(client, path: str, search: str = "") -> str:
    """A page's text; fails unless the page callback answered 200."""
    from bench.dash_client import texts

    status, resp = client.call(
        "page",
        client.dep("_pages_content.children"),
        {"_pages_location.pathname": path, "_pages_location.search": search},
    )
    assert status == 200, (path, search, status)
    return " ".join(texts(resp["response"]["_pages_content"]["children"]))


def test_the_explorer_reads_the_comparison_from_the_url_and_says_so(client) -> None:
    text = page_text(client, "/sentences", "?run=greedy&vs=beam&outcome=fixed")
    assert "compared with beam: fixed (wrong in greedy, right in beam)" in text
    for search, why in (
        ("?run=greedy&vs=beam&outcome=bogus", "it needs vs=RUN and outcome="),
        ("?run=greedy&vs=beam&outcome=fixed&outcome=broken", "it needs vs=RUN and outcome="),
        ("?run=greedy&vs=plain-beam&outcome=fixed", "different corpora"),
        ("?run=greedy&vs=nope&outcome=fixed", "no complete run 'nope'"),
    ):
        assert "comparison filter ignored: " in page_text(client, "/sentences", search)
        assert why in page_text(client, "/sentences", search)
    # a filter without an outcome filters nothing
    assert queries.Filters(vs="beam").conditions("greedy") == ([], [])


@pytest.mark.parametrize(
    "path,search,message",
    [
        ("/compare", "", "run A is missing"),
        ("/compare", "?a=greedy", "run B is missing"),
        ("/compare", "?a=nope&b=beam", "no complete run 'nope'"),
        ("/compare", "?a=greedy&b=plain-beam", "'task:dates:test:48'"),
        ("/compare", "?a=greedy&a=beam&b=beam", "more than once"),
        ("/compare/sentence", "?a=greedy&b=beam&sent=abc", "non-negative whole number"),
        ("/compare/sentence", "?a=greedy&b=beam", "non-negative whole number"),
        ("/compare/sentence", "?a=greedy&b=beam&sent=-1", "non-negative whole number"),
        ("/compare/sentence", "?a=greedy&b=beam&sent=99999", "and beam have no sentence 99999"),
        ("/compare/sentence", "?a=greedy&b=plain-greedy&sent=1", "different corpora"),
        ("/compare/sentence", "?a=x&b=beam&sent=1", "no complete run 'x'"),
    ],
)
def test_bad_input_answers_with_a_message(client, path, search, message) -> None:
    assert message in page_text(client, path, search)


def test_the_compare_page_shows_deltas_counts_and_lists(client, wh) -> None:
    c = compare_runs(wh, "greedy", "beam")
    text = page_text(client, "/compare", "?a=greedy&b=beam")
    for metric in ("BLEU", "chrF", "TER (lower is better)", "exact_match"):
        assert metric in text
    bleu = c.scores.row(0, named=True)
    assert f"{bleu['delta']:.2f}" in text and f"[{bleu['delta_low']:.2f}, {bleu['delta_high']:+.2f}]" in text
    assert f"Fixed in B: wrong in A, right in B ({c.counts['fixed']})" in text
    assert f"Broken in B: right in A, wrong in B ({c.counts['broken']})" in text
    assert f"Confusions gone in B (made by A only; examples from A): {c.confusions_gone.height}" in text


def test_first_difference() -> None:
    assert first_difference(list("abc"), list("abc")) is None
    assert first_difference(list("abc"), list("axc")) == 1
    assert first_difference(list("ab"), list("abc")) == 2
    assert first_difference([], list("a")) == 0


def test_grouped_bucket_chart_has_both_runs_with_intervals(wh) -> None:
    a, b = queries.buckets(wh, "greedy"), queries.buckets(wh, "beam")
    fig = figures.bucket_pair_chart(a, b, "source_length", "t", ("A: greedy", "B: beam"))
    assert [t.name for t in fig.data] == ["A: greedy", "B: beam"]
    for trace, frame in zip(fig.data, (a, b), strict=True):
        sel = frame.filter(frame["bucketing"] == "source_length")
        assert list(trace.y) == pytest.approx(sel["f_measure"].to_list())
        assert trace.error_y.array is not None and len(trace.error_y.array) == sel.height
    assert fig.layout.barmode == "group"
