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
    """``beamscope serve`` on a free port, one server process unless ``extra`` says otherwise (on
    2 cores every further process slows the suite; the shared ``server`` runs serve's default 2)."""
    extra = extra if "--workers" in extra else ("--workers", "1", *extra)
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
    deadline = time.monotonic() + 120  # an S3 warehouse on a loaded 2-core machine: ~60 s seen
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


def serving(warehouse, *extra: str) -> Iterator[str]:
    """The URL of ``beamscope serve`` over ``warehouse`` while the fixture lasts."""
    proc, url = start_server(warehouse, *extra)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def server(warehouse_dir) -> Iterator[str]:
    yield from serving(warehouse_dir, "--workers", "2")  # serve's default on 2 cores


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


@pytest.fixture(scope="session")
def compare_server(compare_warehouse_dir) -> Iterator[str]:
    yield from serving(compare_warehouse_dir)
