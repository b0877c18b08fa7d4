"""The README's screenshots, taken from the demo warehouse in headless Chromium.

    make demo            # builds demo/warehouse (Ctrl-C once it serves)
    .venv/bin/python -m docs.screenshots [--warehouse demo/warehouse] [--out docs/screenshots]

``beamscope serve`` is started on a free loopback port (as ``bench.load`` does); each shot opens a
URL, waits for a text that says the page has drawn, and saves the whole window
or one element as PNG.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from bench.load import start_server
from warehouse import open_warehouse

TIMEOUT = 60
WIDTH = 1400


@dataclass(frozen=True)
class Shot:
    name: str
    path: str  # URL path and query
    wait: str  # text on the page once it has drawn
    height: int = 1500
    element: str | None = None  # CSS or (from //) XPath selector of the element to save (None: the window)
    action: Callable[[webdriver.Chrome], None] | None = None  # done once the page has drawn


def _force_prefix(prefix: str) -> Callable[[webdriver.Chrome], None]:
    """What-if: type ``prefix`` as the forced target prefix and re-decode."""

    def act(drv: webdriver.Chrome) -> None:
        drv.find_element(By.ID, "whatif-prefix").send_keys(prefix)
        drv.find_element(By.ID, "whatif-force").click()
        _wait_text(drv, "output forced to start with")

    return act


def _wait_text(drv: webdriver.Chrome, text: str) -> None:
    WebDriverWait(drv, TIMEOUT).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), text))


def shots(run: str, greedy: str, sent_id: int, reference: str, changed: int) -> list[Shot]:
    """What the README shows: the numbers beam-5 run, its greedy twin, one of its wrong sentences,
    one sentence the two decode differently."""
    sentence = f"/run/{run}/sentence/{sent_id}"
    pair = f"a={greedy}&b={run}"
    return [
        Shot("overview", f"/?run={run}", "Sentences by blamed stage", 1500),
        Shot(
            "blame-trust",
            f"/?run={run}",
            "How far to trust the blamed stage",
            1500,
            "//div[contains(@class, 'grid2')][.//h4[starts-with(., 'How far to trust')]]",
        ),
        Shot(
            "clusters",
            f"/?run={run}",
            "Sentences by blamed stage",
            3000,
            "//div[contains(@class, 'panel')][h4[starts-with(., 'Where in state space')]]",
        ),
        Shot(
            "corpus-map",
            f"/?run={run}&projection=umap",
            "Decoder states of up to",
            3400,
            "div.panel:has(#corpus-map)",
        ),
        Shot("explorer", f"/sentences?run={run}&stage=prediction", "sentences match", 900),
        Shot("sentence", sentence, "Encoder: source tokens", 2000),
        Shot(
            "neighbours",
            sentence + "?projection=umap",
            "Encoder (blue)",
            4000,
            "//div[h4[starts-with(., 'Nearest training examples')]]",
        ),
        Shot(
            "whatif",
            sentence,
            "What if?",
            4000,
            "//div[h4[starts-with(., 'What if?')]]",
            _force_prefix(reference),
        ),
        Shot(
            "attribution",
            sentence,
            "Why: where the model looked",
            4000,
            "//div[h4[starts-with(., 'Why: where the model looked')]]",
        ),
        Shot("perturbations", "/perturbations", "Perturbation runs", 1600),
        Shot("sql", "/sql", "SQL", 1100),
        Shot("compare", f"/compare?{pair}", "wrong in both", 2200),
        Shot("compare-sentence", f"/compare/sentence?{pair}&sent={changed}", "Sentence", 2000),
    ]


def take(drv: webdriver.Chrome, url: str, shot: Shot, out: Path) -> Path:
    # the viewport itself: a headless window is no taller than its virtual screen
    metrics = {"width": WIDTH, "height": shot.height, "deviceScaleFactor": 1, "mobile": False}
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    drv.get(url + shot.path)
    try:
        _wait_text(drv, shot.wait)
    except TimeoutException:  # a page that loaded before its callbacks were wired: once more
        drv.refresh()
        _wait_text(drv, shot.wait)
    if shot.action:
        shot.action(drv)
    time.sleep(1.5)  # plotly's transitions
    path = out / f"{shot.name}.png"
    if shot.element:
        by = By.XPATH if shot.element.startswith("//") else By.CSS_SELECTOR
        drv.find_element(by, shot.element).screenshot(str(path))
    else:
        drv.save_screenshot(str(path))
    return path


def browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def main(warehouse: Path, out: Path) -> None:
    with open_warehouse(warehouse) as wh:
        runs = [r for r in wh.run_ids() if r.startswith("numbers-lstm") and r.endswith(".test")]
        if not runs:
            raise SystemExit(f"{warehouse} has no numbers test run: run `make demo` first")
        run = runs[-1]
        greedy = f"{run}.beam1"
        query = (
            "SELECT sent_id, reference FROM sentences WHERE run_id = ? AND NOT exact_match ORDER BY 1 LIMIT 1"
        )
        wrong, reference = wh.sql(query, [run]).row(0)
        changed = wh.sql(
            "SELECT min(a.sent_id) AS s FROM sentences a JOIN sentences b USING (sent_id) "
            "WHERE a.run_id = ? AND b.run_id = ? AND a.exact_match <> b.exact_match",
            [greedy, run],
        )["s"][0]
    proc, port = start_server(warehouse, "cpu")
    drv = browser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for shot in shots(run, greedy, int(wrong), reference, int(changed if changed is not None else wrong)):
            print(take(drv, f"http://127.0.0.1:{port}", shot, out), flush=True)
    finally:
        drv.quit()
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m docs.screenshots")
    parser.add_argument("--warehouse", type=Path, default=Path("demo/warehouse"))
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    main(args.warehouse, args.out)
