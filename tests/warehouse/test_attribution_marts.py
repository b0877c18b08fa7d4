"""The attention-vs-attribution marts against the same figures computed here with pandas/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from warehouse import open_warehouse

RUN = "greedy"  # the shared warehouse's run traced with --attribution ig


def _tables(wh):
    attr = wh.sql(f"SELECT * FROM attribution WHERE run_id = '{RUN}' AND side = 'src'").to_pandas()
    attn = wh.sql(
        f"SELECT sent_id, step, src_pos, weight FROM attention WHERE run_id = '{RUN}' "
        "AND decoding = 'hyp' AND layer = -1 AND head = -1"
    ).to_pandas()
    return attr.rename(columns={"position": "src_pos"}).merge(attn, on=["sent_id", "step", "src_pos"])


def test_attention_attribution_per_step(warehouse_dir) -> None:
    with open_warehouse(warehouse_dir) as wh:
        mart = wh.mart("attention_attribution", RUN).to_pandas().set_index(["sent_id", "step"])
        both = _tables(wh)
        n_steps = wh.sql(f"SELECT count(*) FROM attribution_steps WHERE run_id = '{RUN}'").item()
    assert len(mart) == n_steps > 48
    for (sid, step), g in both.groupby(["sent_id", "step"]):
        row = mart.loc[(sid, step)]
        g = g.sort_values("src_pos")
        weight = g.weight.astype(float).to_numpy()
        magnitude = g.score.abs().to_numpy()
        assert row.n_src == len(g)
        assert row.attn_top_pos == g.src_pos.to_numpy()[np.argmax(weight)]
        assert row.attr_top_pos == g.src_pos.to_numpy()[np.argmax(magnitude)]
        if len(g) > 1 and weight.std() > 0 and magnitude.std() > 0:
            assert abs(row.spearman - spearmanr(weight, magnitude).statistic) < 1e-9


def test_summary_by_stage_and_tag(warehouse_dir) -> None:
    with open_warehouse(warehouse_dir) as wh:
        summary = wh.mart("attention_attribution_summary", RUN).to_pandas()
        steps = wh.mart("attention_attribution", RUN).to_pandas()
        sents = wh.mart("sentence_errors", RUN).to_pandas()[
            ["sent_id", "stage", "error_tags", "first_divergence_step"]
        ]
    steps = steps.merge(sents, on="sent_id")
    by_stage = summary[summary.grouping == "stage"].set_index("group")
    for stage, g in steps.groupby("stage"):
        row = by_stage.loc[stage]
        assert row.steps == len(g) and row.sentences == g.sent_id.nunique()
        assert np.isclose(row.top_agreement, g.same_top.mean())
        div = g[g.step == g.first_divergence_step]
        assert row.divergence_steps == len(div)
    tagged = steps.explode("error_tags").dropna(subset=["error_tags"])
    by_tag = summary[summary.grouping == "tag"].set_index("group")
    assert set(by_tag.index) == set(tagged.error_tags)
    for tag, g in tagged.groupby("error_tags"):
        assert by_tag.loc[tag].steps == len(g)
        assert np.isclose(by_tag.loc[tag].mean_spearman, pd.to_numeric(g.spearman).mean(), equal_nan=True)
