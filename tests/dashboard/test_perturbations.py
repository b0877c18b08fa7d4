"""The perturbations page and the two-run sentence view of an original and its variant."""

from __future__ import annotations

import pytest

from tests.dashboard.test_compare import page_text
from tests.helpers import build_perturb_warehouse
from warehouse import open_warehouse
from warehouse.perturbations import perturbation_summary, worst_flips


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_dir):
    root = build_perturb_warehouse(tiny_dir, tmp_path_factory.mktemp("perturb-page") / "wh")
    with open_warehouse(root) as w:
        yield w


@pytest.fixture(scope="module")
def client(wh):
    from bench.dash_client import DashClient, FlaskTransport
    from dashboard.app import create_app

    c = DashClient(FlaskTransport(create_app(wh).server.test_client()))
    c.load_dependencies()
    return c


def test_the_page_lists_runs_rates_and_flips(client, wh) -> None:
    from dashboard.pages.perturbations import layout, pair_href

    text = page_text(client, "/perturbations")
    s = perturbation_summary(wh, "orig.case")
    assert "orig.case" in text and "orig.change" in text
    assert f"{100 * s['invariance_failure_rate']:.1f}%" in text
    flip = worst_flips(wh, "orig.case", limit=1).row(0, named=True)
    assert flip["variant_source"] in text
    assert pair_href("orig", "orig.case", flip["sent_id"]) in str(layout())


def test_a_flip_opens_the_two_run_sentence_view(client, wh) -> None:
    flip = worst_flips(wh, "orig.case", limit=1).row(0, named=True)
    text = page_text(client, "/compare/sentence", f"?a=orig&b=orig.case&sent={flip['sent_id']}")
    assert "(a perturbation of A)" in text and flip["variant_source"] in text and flip["source"] in text
    assert "different corpora" in page_text(client, "/compare/sentence", "?a=orig.case&b=orig&sent=1")
