"""The perturbation marts equal counts computed directly (pandas) from the two sentences tables."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import build_perturb_warehouse
from warehouse import open_warehouse
from warehouse.perturbations import (
    format_summary,
    is_variant_pair,
    perturbation_runs,
    perturbation_summaries,
    perturbation_summary,
    worst_flips,
)


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_dir):
    root = build_perturb_warehouse(tiny_dir, tmp_path_factory.mktemp("perturb") / "wh")
    with open_warehouse(root) as w:
        yield w


def _pairs(wh, run: str) -> pd.DataFrame:
    frame = lambda r: wh.sql("SELECT * FROM sentences WHERE run_id = ?", [r]).to_pandas()  # noqa: E731
    return frame("orig").merge(frame(run), on="sent_id", suffixes=("_o", "_v"))


@pytest.mark.parametrize(("run", "expect"), [("orig.case", "same"), ("orig.change", "change")])
def test_summary_equals_direct_counts(wh, run, expect) -> None:
    p = _pairs(wh, run)
    changed = int((p["hypothesis_o"] != p["hypothesis_v"]).sum())
    s = perturbation_summary(wh, run)
    assert (s["kind"], s["of"], s["expect"], s["n"]) == (run.split(".")[1], "orig", expect, len(p))
    assert s["changed"] == changed and s["changed_share"] == pytest.approx(changed / len(p))
    failures = changed if expect == "same" else None
    stayed = len(p) - changed if expect == "change" else None
    assert (s["invariance_failures"], s["stayed"]) == (failures, stayed)
    rate = lambda x: None if x is None else pytest.approx(x / len(p))  # noqa: E731
    assert (s["invariance_failure_rate"], s["stayed_rate"]) == (rate(failures), rate(stayed))
    assert s["exact_match"] == pytest.approx((p["hypothesis_v"] == p["reference_v"]).mean())
    skipped = wh.sql("SELECT count(*) AS n FROM skipped WHERE run_id = ?", [run])["n"][0]
    assert s["n_skipped"] == skipped and (skipped > 0) == (expect == "same")
    flips = p[p["exact_match_o"] & ~p["exact_match_v"].astype(bool)]
    assert s["n_flips"] == len(flips) > 0
    assert str(s["n"]) in format_summary(s)


def test_worst_flips_are_ordered_by_the_reference_score_drop(wh) -> None:
    p = _pairs(wh, "orig.case")
    want = p[p["exact_match_o"] & ~p["exact_match_v"].astype(bool)].assign(
        drop=lambda d: d["ref_score_o"] - d["ref_score_v"]
    )
    want = want.sort_values(["drop", "sent_id"], ascending=[False, True])
    got = worst_flips(wh, "orig.case", limit=None)
    assert got["sent_id"].to_list() == want["sent_id"].to_list()
    assert got["ref_score_drop"].to_list() == pytest.approx(want["drop"].to_list())
    assert got["variant_source"].to_list() == want["source_v"].to_list()
    assert worst_flips(wh, "orig.case", limit=3).height == min(3, len(want))


def test_runs_and_pairs(wh) -> None:
    assert perturbation_runs(wh)["run_id"].to_list() == ["orig.case", "orig.change"]
    assert perturbation_summaries(wh).height == 2
    assert is_variant_pair(wh, "orig", "orig.case") and not is_variant_pair(wh, "orig.case", "orig")
    assert not is_variant_pair(wh, "plain", "orig.case") and not is_variant_pair(wh, ["orig"], "orig.case")


def test_pages_open_on_the_newest_run_that_is_no_perturbation(wh) -> None:
    """The perturbation runs are the newest; the default run (overview, explorer, errors) is 'orig'."""
    assert wh.run_ids()[-1] == "orig.change"
    assert wh.default_run() == "orig" and wh.resolve_run(None) == "orig"
    # a variant's sentence is found although its part holds other ids than part_size says
    from dashboard import queries

    sid = wh.sql("SELECT max(sent_id) FROM sentences WHERE run_id = 'orig.case'").item()
    assert queries.sentence_view(wh, "orig.case", sid) is not None
