"""Projections and state clusters in headless Chromium: choosing t-SNE changes the URL and the
picture; a bad projection or cluster in the URL is said on the page; a click on a cluster opens
the explorer on its sentences."""

from __future__ import annotations

import os

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import queries
from tests.dashboard.conftest import start_server
from tests.dashboard.test_browser import TIMEOUT, wait_text
from warehouse import open_warehouse

_FIGURE = (  # the x-axis title and the first x values of a graph's figure (null before it has data)
    "const g = document.querySelector(arguments[0] + ' .js-plotly-plot'), f = g && g._fullLayout;"
    "return f && f.xaxis && g.data && g.data[0] ? [f.xaxis.title.text, g.data[0].x.slice(0, 5)] : null;"
)


@pytest.fixture(scope="module")
def states_server(warehouse_dir, tmp_path_factory):
    """A server whose projection cache is a fresh directory (so t-SNE is computed by the test)."""
    before = os.environ.get("BEAMSCOPE_CACHE")
    os.environ["BEAMSCOPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        proc, url = start_server(warehouse_dir)
    finally:
        os.environ.pop("BEAMSCOPE_CACHE") if before is None else os.environ.update(BEAMSCOPE_CACHE=before)
    yield url
    proc.terminate()
    proc.wait(10)


def _figure(drv, graph: str, axis: str):
    """The figure's x-axis title and first x values, once its x axis is titled ``axis``."""
    return WebDriverWait(drv, TIMEOUT).until(
        lambda d: (f := d.execute_script(_FIGURE, graph)) and f[0] == axis and f
    )


def _click(drv, selector: str) -> None:
    el = WebDriverWait(drv, TIMEOUT).until(EC.element_to_be_clickable((By.CSS_SELECTOR, selector)))
    ActionChains(drv).move_to_element(el).pause(0.2).click().perform()


def test_choosing_tsne_changes_the_url_and_the_corpus_map(states_server, browser) -> None:
    browser.get(states_server + "/?run=beam4")
    _, pca_x = _figure(browser, "#corpus-map", "PC 1")
    _click(browser, "#corpus-projection input[value='tsne']")
    WebDriverWait(browser, TIMEOUT).until(EC.url_contains("projection=tsne"))
    assert "run=beam4" in browser.current_url
    _, tsne_x = _figure(browser, "#corpus-map", "t-SNE 1")
    assert tsne_x != pca_x
    assert browser.find_element(By.CSS_SELECTOR, "#corpus-projection input[value='tsne']").is_selected()
    # the URL alone gives the same picture (seeded, and now cached)
    browser.get(states_server + "/?run=beam4&projection=tsne")
    assert _figure(browser, "#corpus-map", "t-SNE 1")[1] == tsne_x


def test_choosing_tsne_on_the_sentence_page_projects_its_trajectory(states_server, browser) -> None:
    browser.get(states_server + "/run/beam4/sentence/5")
    wait_text(browser, "State trajectory")
    _click(browser, "#trajectory-projection input[value='tsne']")
    WebDriverWait(browser, TIMEOUT).until(EC.url_matches(r"/run/beam4/sentence/5\?projection=tsne$"))
    _figure(browser, "#trajectory", "t-SNE 1")  # shown at once: the URL names the projection


@pytest.mark.parametrize("path", ["/?run=beam4&projection=isomap", "/run/beam4/sentence/5?projection=isomap"])
def test_an_unknown_projection_is_said_on_the_page(states_server, browser, path) -> None:
    browser.get(states_server + path)
    wait_text(browser, "unknown projection 'isomap'; choose one of pca (PCA), umap (UMAP), tsne (t-SNE)")
    assert "Internal Server Error" not in browser.find_element(By.TAG_NAME, "body").text


def test_a_click_on_a_cluster_opens_the_explorer(states_server, browser, warehouse_dir) -> None:
    with open_warehouse(warehouse_dir) as wh:
        clusters = queries.state_clusters(wh, "beam4")
        members = wh.sql("SELECT sent_id FROM state_cluster_members WHERE run_id = 'beam4' AND cluster = 2")
    browser.get(states_server + "/?run=beam4")
    wait_text(browser, "Where in state space the model fails")
    rows = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_elements(By.XPATH, "//tr[contains(@id, '\"state-clusters\"')]")
    )
    assert len(rows) == clusters.height
    ActionChains(browser).move_to_element(rows[1]).pause(0.2).click().perform()  # the second-ranked
    WebDriverWait(browser, TIMEOUT).until(EC.url_matches(r"/sentences\?run=beam4&cluster=2$"))
    wait_text(browser, f"{clusters['n_states'][1]} sentences match")
    wait_text(browser, "state cluster 2")
    cells = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".ag-row .ag-cell[col-id='sent_id']")
    )
    assert {int(c.text) for c in cells} == set(members["sent_id"].to_list())


@pytest.mark.parametrize(
    "cluster,message", [("99", "run beam4 has no state cluster 99"), ("x", "is not a cluster number")]
)
def test_a_cluster_out_of_range_is_said_in_the_explorer(states_server, browser, cluster, message) -> None:
    browser.get(f"{states_server}/sentences?run=beam4&cluster={cluster}")
    wait_text(browser, message)
