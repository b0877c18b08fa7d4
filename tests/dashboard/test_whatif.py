"""G2 and G3 in the browser: nearest training states, the trajectory, and the what-if flow
(click a top-k alternative, see the new hypothesis beside the original, save it as a run)."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import queries
from pipeline.beam import DecodeConfig
from pipeline.models import load_model
from pipeline.whatif import Intervention, redecode
from tests.dashboard.conftest import start_server
from tests.dashboard.test_browser import TIMEOUT, wait_text
from warehouse import open_warehouse


@pytest.fixture(scope="module")
def trained_copy(train_warehouse_dir, tmp_path_factory):
    """A copy: saving a what-if adds a run."""
    copy = tmp_path_factory.mktemp("whatif") / "wh"
    shutil.copytree(train_warehouse_dir, copy)
    return copy


@pytest.fixture(scope="module")
def trained_server(trained_copy):
    proc, url = start_server(trained_copy, "--device", "cpu")
    yield url
    proc.terminate()
    proc.wait(10)


def _wrong_sentence(root) -> int:
    with open_warehouse(root) as wh:
        return wh.sql("SELECT min(sent_id) FROM sentences WHERE run_id = 'test' AND NOT exact_match").item()


def test_neighbours_and_trajectory(trained_server, trained_copy, browser) -> None:
    sid = _wrong_sentence(trained_copy)
    browser.get(f"{trained_server}/run/test/sentence/{sid}")
    wait_text(browser, "Nearest training examples")
    rows = WebDriverWait(browser, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#nn-rows tr"))
    assert len(rows) == 1 + 10  # header + k neighbours
    assert rows[1].find_elements(By.CSS_SELECTOR, ".tok.hit"), "the matching reference token is highlighted"
    browser.find_element(By.ID, "trajectory-show").click()
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#trajectory g.trace")) >= 4
    )


def test_corpus_map_by_stage_and_a_dot_opens_its_sentence(trained_server, trained_copy, browser) -> None:
    with open_warehouse(trained_copy) as wh:
        stages = set(queries.stage_counts(wh, "test")["stage"])
    browser.get(f"{trained_server}/?run=test")
    legend = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#corpus-map .legend").text
    )
    assert set(legend.split("\n")) == stages  # coloured by the sentence's stage
    plot = browser.find_element(By.CSS_SELECTOR, "#corpus-map .js-plotly-plot")
    x, y = browser.execute_script(  # the first dot's pixel position, from plotly's own axes
        "const g = arguments[0], f = g._fullLayout, t = g._fullData[0];"
        "return [f.xaxis.l2p(t.x[0]) + f.margin.l, f.yaxis.l2p(t.y[0]) + f.margin.t];",
        plot,
    )
    w, h = plot.size["width"], plot.size["height"]
    ActionChains(browser).move_to_element_with_offset(plot, int(x - w / 2), int(y - h / 2)).pause(
        0.3
    ).click().perform()
    WebDriverWait(browser, TIMEOUT).until(
        EC.url_matches(r"/run/test/sentence/\d+$")
    )  # the dot's (or one on it)
    wait_text(browser, "Encoder: source tokens")


def test_click_a_topk_alternative_and_see_it_beside_the_original(
    trained_server, trained_copy, tiny_dir, browser
) -> None:
    sid = _wrong_sentence(trained_copy)
    with open_warehouse(trained_copy) as wh:
        view = queries.sentence_view(wh, "test", sid)
        decoding = DecodeConfig(**json.loads(queries.run_info(wh, "test")["decoding"]))
    steps = view.target_steps
    step, rank = 1, 2  # the second-best token at step 1
    alt = steps["topk_token_ids"][step][rank - 1]
    model = load_model(tiny_dir, torch.device("cpu"))
    prefix = (*steps["token_id"].to_list()[:step], alt)
    expected = redecode(
        model, Intervention(view.sentence["source"], view.sentence["reference"], prefix), decoding
    )
    expected_hyp = expected.tables["sentences"]["hypothesis"][0].as_py()

    browser.get(f"{trained_server}/run/test/sentence/{sid}")
    wait_text(browser, "What if?")
    area = WebDriverWait(browser, TIMEOUT).until(lambda d: d.find_element(By.CSS_SELECTOR, "#topk .nsewdrag"))
    n_steps, k = steps.height, len(steps["topk_token_ids"][0])
    w, h = area.size["width"], area.size["height"]
    dx = (step + 0.5) * w / n_steps - w / 2  # offsets from the element's centre
    dy = (rank - 0.5) * h / k - h / 2
    ActionChains(browser).move_to_element_with_offset(area, int(dx), int(dy)).pause(0.3).click().perform()
    wait_text(browser, "What if: output forced to start with")
    result = browser.find_element(By.ID, "whatif-result").text
    assert "Original" in result and "What-if" in result
    assert f"hypothesis: {expected_hyp}" in result
    assert f"hypothesis: {view.sentence['hypothesis']}" in result
    assert len(browser.find_elements(By.CSS_SELECTOR, "#whatif-result .js-plotly-plot")) == 6  # 3 stages x 2

    browser.find_element(By.ID, "whatif-save").click()
    wait_text(browser, "saved as run what-if-")
    with open_warehouse(trained_copy) as wh:
        saved = wh.sql("SELECT * FROM runs WHERE split = 'what-if'")
        assert saved.height == 1
        hyp = wh.sql("SELECT hypothesis FROM sentences WHERE run_id = ?", [saved["run_id"][0]]).item()
    assert hyp == expected_hyp
    assert json.loads(saved["options"][0])["what_if"]["prefix"] == model.tgt_pieces(list(prefix))


def test_whatif_view_equals_the_traced_view(warehouse_dir) -> None:
    """A what-if's in-memory tables render through the same view as the warehouse's rows."""
    import pyarrow.dataset as ds

    from schemas import PART_TABLES

    with open_warehouse(warehouse_dir) as wh:
        stored = queries.sentence_view(wh, "greedy", 7)
    tables = {
        t: ds.dataset(warehouse_dir / f"tables/{t}/run=greedy").to_table(filter=ds.field("sent_id") == 7)
        for t in PART_TABLES
    }
    vocabulary = ds.dataset(warehouse_dir / "tables/vocabulary/run=greedy").to_table()
    built = queries.view_from_tables(tables, vocabulary)
    assert built.sentence == stored.sentence
    for name in ("source_tokens", "target_steps", "reference_steps", "attention", "beam_nodes"):
        assert getattr(built, name).equals(getattr(stored, name)), name
    assert isinstance(built.target_steps, pl.DataFrame)
