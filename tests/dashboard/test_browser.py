"""Every page in headless Chromium on a served warehouse; the click path overview -> explorer -> sentence."""

from __future__ import annotations

import re

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import queries
from warehouse import open_warehouse

TIMEOUT = 30


def wait_text(drv, text: str) -> None:
    WebDriverWait(drv, TIMEOUT).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), text))


def test_every_page_opens(server, browser) -> None:
    browser.get(server + "/?run=beam4")
    wait_text(browser, "Sentences by blamed stage")
    assert "exact match" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(server + "/sentences?run=beam4")
    wait_text(browser, "48 sentences match")
    browser.get(server + "/run/beam4/sentence/5")
    wait_text(browser, "Encoder: source tokens")
    body = browser.find_element(By.TAG_NAME, "body").text
    for stage in ("Decoder:", "Attention", "Prediction:", "Search:"):
        assert stage in body
    # attention, top-k, beam tree, state trajectory
    # plotly.js loads after the page's text: wait for the figures
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == 4
    )
    wait_text(browser, "has no traced training run")  # this warehouse has none: said, not an error


def test_click_from_a_stage_bar_to_the_explorer_to_a_sentence(server, browser, warehouse_dir) -> None:
    with open_warehouse(warehouse_dir) as wh:
        stages = queries.stage_counts(wh, "beam4")
    browser.get(server + "/?run=beam4")
    wait_text(browser, "Sentences by blamed stage")
    bars = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#stage-bar g.point path")
    )
    assert len(bars) == stages.height
    ActionChains(browser).move_to_element(bars[0]).pause(0.3).click().perform()  # as a user: at its spot
    WebDriverWait(browser, TIMEOUT).until(EC.url_contains("/sentences"))
    first = stages.row(0, named=True)
    assert f"stage={first['stage']}" in browser.current_url
    wait_text(browser, f"{first['n']} sentences match")
    cell = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".ag-row[row-index='0'] .ag-cell[col-id='sent_id']")
    )
    sent_id = cell.text.strip()
    cell.click()
    WebDriverWait(browser, TIMEOUT).until(EC.url_matches(rf"/run/beam4/sentence/{sent_id}$"))
    wait_text(browser, f"Sentence {sent_id} of beam4")
    with open_warehouse(warehouse_dir) as wh:
        s = queries.sentence_view(wh, "beam4", int(sent_id)).sentence
    assert s["stage"] == first["stage"]
    assert s["hypothesis"] in browser.find_element(By.TAG_NAME, "body").text


def test_explorer_filter_in_the_url_and_sorting(server, browser) -> None:
    browser.get(server + "/sentences?run=beam4&min_len=10&max_len=14")
    body = WebDriverWait(browser, TIMEOUT).until(
        lambda d: re.search(r"(\d+) sentences match", d.find_element(By.TAG_NAME, "body").text)
    )
    assert 0 < int(body.group(1)) < 48


@pytest.mark.parametrize(
    "path,message",
    [
        ("/run/beam4/sentence/abc", "non-negative whole number"),
        ("/run/nope/sentence/1", "No complete run"),
        ("/run/beam4/sentence/99999", "has no sentence"),
    ],
)
def test_bad_sentence_urls_are_refused(server, browser, path, message) -> None:
    browser.get(server + path)
    wait_text(browser, message)


def test_sql_console_runs_a_query_and_refuses_an_escape(server, browser) -> None:
    browser.get(server + "/sql")
    wait_text(browser, "rows in")  # the example query ran
    area = browser.find_element(By.ID, "sql-text")
    area.clear()
    area.send_keys("SELECT * FROM read_csv('/etc/passwd')")
    browser.find_element(By.ID, "sql-run").click()
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "sql-message").get_attribute("class") == "error"
    )
    assert "root:" not in browser.find_element(By.TAG_NAME, "body").text


def test_sentence_text_is_rendered_as_text_never_html(tiny_dir, tmp_path, browser) -> None:
    from pipeline.beam import DecodeConfig
    from pipeline.trace import TraceConfig, trace
    from tests.dashboard.conftest import start_server

    evil = '<img src=x onerror="document.title=1"><script>document.title=2</script>5.3.21'
    corpus = tmp_path / "evil.tsv"
    corpus.write_text(f"{evil}\t<b>bold</b>\n")
    trace(
        TraceConfig(
            model=str(tiny_dir),
            corpus=str(corpus),
            warehouse=str(tmp_path / "wh"),
            run_name="evil",
            decoding=DecodeConfig(beam=2, max_len=12),
            device="cpu",
        ),
        progress=False,
    )
    proc, url = start_server(tmp_path / "wh")
    try:
        browser.get(url + "/run/evil/sentence/0")
        wait_text(browser, "Sentence 0 of evil")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert evil in body and "<b>bold</b>" in body
        assert browser.find_elements(By.CSS_SELECTOR, ".page img, .page script, .page b") == []
        assert browser.title == "beamscope"
    finally:
        proc.terminate()
        proc.wait(10)
