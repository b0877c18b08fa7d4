"""A real `beamscope serve` and a real headless Chromium (Debian's), for browser tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import BEAMSCOPE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(warehouse, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # to a file: the server logs every request, and an undrained pipe would fill and stall it
    with tempfile.NamedTemporaryFile("w", prefix="beamscope-serve-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [BEAMSCOPE, "serve", "--warehouse", str(warehouse), "--port", str(port), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_dash-layout", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(Path(log.name).read_text()) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("beamscope serve did not start")


@pytest.fixture(scope="session")
def server(warehouse_dir) -> Iterator[str]:
    proc, url = start_server(warehouse_dir)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "browser tests need Debian's chromium and chromium-driver (make browser)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def build_compare_warehouse(model: Path, root: Path) -> Path:
    """Runs of one tiny model over one corpus where every outcome occurs: 'greedy' (beam 1) and
    'beam' (beam 4) over the dates test sources with planted references (by sentence id mod 4:
    greedy's hypothesis, beam's, the true date, greedy's again: so 'beam' fixes the second kind,
    breaks the first and last, both are wrong on the third); and 'plain-greedy' and 'plain-beam',
    the same decodings over the task corpus itself (another corpus; they give the hypotheses)."""
    from pipeline.beam import DecodeConfig
    from tests.helpers import trace_run
    from warehouse import open_warehouse

    decodings = {
        "greedy": DecodeConfig(beam=1, topk=5, max_len=16),
        "beam": DecodeConfig(beam=4, topk=5, max_len=16),
    }
    for name, decoding in decodings.items():
        trace_run(
            model,
            "task:dates:test:48",
            root,
            f"plain-{name}",
            decoding,
            batch_size=16,
            agreement="divergence",
        )
    with open_warehouse(root) as wh:
        rows = wh.sql(
            "SELECT g.sent_id, g.source, g.reference, g.hypothesis AS greedy, b.hypothesis AS beam "
            "FROM sentences g JOIN sentences b USING (sent_id) "
            "WHERE g.run_id = 'plain-greedy' AND b.run_id = 'plain-beam' ORDER BY g.sent_id"
        )
    lines = []
    for r in rows.iter_rows(named=True):
        planted = [r["greedy"], r["beam"], r["reference"], r["greedy"]][r["sent_id"] % 4]
        lines.append(f"{r['source']}\t{planted or r['reference']}\n")
    corpus = root.parent / "planted.tsv"
    corpus.write_text("".join(lines))
    for name, decoding in decodings.items():
        trace_run(model, corpus, root, name, decoding, batch_size=16, agreement="divergence")
    return root


@pytest.fixture(scope="session")
def compare_warehouse_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    return build_compare_warehouse(tiny_dir, tmp_path_factory.mktemp("wh") / "compare")


@pytest.fixture(scope="session")
def compare_server(compare_warehouse_dir) -> Iterator[str]:
    proc, url = start_server(compare_warehouse_dir)
    yield url
    proc.terminate()
    proc.wait(10)
