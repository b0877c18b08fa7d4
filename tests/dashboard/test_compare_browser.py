"""The compare pages in headless Chromium on a served warehouse: deltas and counts, a count to the
filtered explorer, a list row to the two-run sentence view, "compare with…" on the overview, and
bad input answered with a message."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.test_browser import TIMEOUT, wait_text
from warehouse import open_warehouse
from warehouse.compare import compare_runs


@pytest.fixture(scope="module")
def comparison(compare_warehouse_dir):
    with open_warehouse(compare_warehouse_dir) as wh:
        return compare_runs(wh, "greedy", "beam")


def drawn(element) -> list[bool]:
    """For each plotly figure in ``element``: whether plotly has drawn it."""
    plots = element.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    return [bool(p.find_elements(By.CSS_SELECTOR, ".main-svg")) for p in plots]


def test_deltas_and_counts_and_a_count_opens_the_filtered_explorer(
    compare_server, browser, comparison
) -> None:
    c = comparison
    browser.get(compare_server + "/compare?a=greedy&b=beam")
    wait_text(browser, "Fixed in B")
    scores = browser.find_element(By.ID, "compare-scores").text
    for m in c.scores.iter_rows(named=True):
        fmt = "{:+.1f}%" if m["metric"] == "exact_match" else "{:+.2f}"
        scale = 100 if m["metric"] == "exact_match" else 1
        assert m["metric"] in scores and fmt.format(scale * m["delta_high"]) in scores
    for outcome, n in c.counts.items():
        assert browser.find_element(By.CSS_SELECTOR, f"#compare-count-{outcome} a").text == str(n)
    # the two bucket charts, once plotly.js (loaded after the page's text) has drawn them
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == 2
    )
    browser.find_element(By.CSS_SELECTOR, "#compare-count-fixed a").click()
    WebDriverWait(browser, TIMEOUT).until(EC.url_contains("/sentences?"))
    assert "run=greedy" in browser.current_url and "vs=beam" in browser.current_url
    assert "outcome=fixed" in browser.current_url
    wait_text(browser, f"{c.counts['fixed']} sentences match")
    wait_text(browser, "compared with beam: fixed")
    cells = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".ag-row .ag-cell[col-id='sent_id']")
    )
    shown = {int(cell.text) for cell in cells}
    assert shown and shown <= set(c.fixed["sent_id"])
    cells[0].click()  # a row of a comparison's explorer opens both runs' view
    WebDriverWait(browser, TIMEOUT).until(EC.url_contains("/compare/sentence?"))
    wait_text(browser, "A = greedy  vs  B = beam".replace("  ", " "))


def test_a_list_row_opens_the_two_run_view_with_both_sides_figures(
    compare_server, browser, comparison
) -> None:
    broken = comparison.broken.row(0, named=True)
    browser.get(compare_server + "/compare?a=greedy&b=beam")
    wait_text(browser, "Broken in B")
    link = browser.find_element(By.CSS_SELECTOR, "#compare-broken tbody tr a")
    assert link.text == str(broken["sent_id"])
    link.click()
    WebDriverWait(browser, TIMEOUT).until(
        EC.url_contains(f"/compare/sentence?a=greedy&b=beam&sent={broken['sent_id']}")
    )
    wait_text(browser, "first differ at step")
    for side, hyp in (("a", broken["hyp_a"]), ("b", broken["hyp_b"])):
        panel = browser.find_element(By.ID, f"pair-side-{side}")
        assert hyp in panel.text
        for stage in ("Encoder:", "Decoder:", "Attention", "Prediction:", "Search:"):
            assert stage in panel.text
        # attention, top-k and beam tree, each drawn
        WebDriverWait(browser, TIMEOUT).until(lambda d, p=panel: drawn(p) == [True] * 3)
        assert len(panel.find_elements(By.CSS_SELECTOR, ".tok.differ")) == 1
    # B is wrong here: its first divergence is marked; A is right: none
    assert browser.find_elements(By.CSS_SELECTOR, "#pair-side-b .tok.diverge")
    assert not browser.find_elements(By.CSS_SELECTOR, "#pair-side-a .tok.diverge")


def test_the_overview_offers_compare_with(compare_server, browser) -> None:
    browser.get(compare_server + "/?run=greedy")
    wait_text(browser, "compare with…")
    # the options of the open dropdown (the projection radio items are options too)
    browser.find_element(By.ID, "overview-compare").click()
    options = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "[role='option']:not(#corpus-projection *)")
    )
    assert [o.text for o in options] == ["beam"]  # only the run over the same corpus
    options[0].click()
    WebDriverWait(browser, TIMEOUT).until(EC.url_contains("/compare?a=greedy&b=beam"))
    wait_text(browser, "Fixed in B")


@pytest.mark.parametrize(
    "path,message",
    [
        ("/compare?a=greedy", "run B is missing"),
        ("/compare?a=greedy&b=plain-beam", "different corpora ('"),
        ("/compare?a=nope&b=beam", "no complete run 'nope'"),
        ("/compare/sentence?a=greedy&b=beam&sent=abc", "non-negative whole number"),
        ("/compare/sentence?a=greedy&b=beam&sent=4800", "have no sentence 4800"),
    ],
)
def test_bad_input_shows_a_message(compare_server, browser, path, message) -> None:
    browser.get(compare_server + path)
    wait_text(browser, message)


def test_bad_input_is_never_a_server_error(compare_server) -> None:
    """The page callback answers 200 for every bad URL (the browser tests see its message)."""
    from bench.dash_client import DashClient, HttpTransport

    host, port = compare_server.removeprefix("http://").split(":")
    client = DashClient(HttpTransport(host, int(port), timeout=60))
    client.load_dependencies()
    dep = client.dep("_pages_content.children")
    for path, search in (
        ("/compare", ""),
        ("/compare", "?a=greedy&a=beam&b=beam"),
        ("/compare", "?a=greedy&b=plain-greedy"),
        ("/compare/sentence", "?a=greedy&b=beam&sent=1&sent=2"),
        ("/compare/sentence", "?a=greedy&b=beam&sent=99999999999999999999"),
        ("/compare/sentence", "?b=beam&sent=1"),
        ("/sentences", "?run=greedy&vs=plain-beam&outcome=fixed"),
        ("/sentences", "?run=greedy&vs=beam&outcome=nothing"),
    ):
        status, _ = client.call(
            "page", dep, {"_pages_location.pathname": path, "_pages_location.search": search}
        )
        assert status == 200, (path, search, status)
