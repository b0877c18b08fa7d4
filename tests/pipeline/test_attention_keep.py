"""Long sources: storing only each attention row's top-k / top-p positions, with the kept mass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.beam import DecodeConfig
from pipeline.records.attention import AttentionKeep
from schemas import ConfigError
from tests.helpers import assert_one_line_error, run_cli, trace_run
from warehouse import open_warehouse

ROW = np.array([0.05, 0.4, 0.1, 0.3, 0.15])


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (AttentionKeep(), [0, 1, 2, 3, 4]),
        (AttentionKeep(top_k=2), [1, 3]),
        (AttentionKeep(top_p=0.7), [1, 3]),  # 0.4 + 0.3 reach 0.7
        (AttentionKeep(top_p=0.71), [1, 3, 4]),
        (AttentionKeep(top_k=2, top_p=0.9), [1, 3]),  # at most k
        (AttentionKeep(top_p=0.01), [1]),  # always the peak
    ],
)
def test_the_kept_positions_of_a_row(keep, kept) -> None:
    mask = keep.mask(np.stack([ROW, ROW[::-1]]))
    assert np.flatnonzero(mask[0]).tolist() == kept
    assert np.flatnonzero(mask[1]).tolist() == sorted(4 - i for i in kept)


@pytest.mark.parametrize("keep", [AttentionKeep(top_k=0), AttentionKeep(top_p=0.0), AttentionKeep(top_p=1.5)])
def test_bad_settings_are_refused(keep) -> None:
    with pytest.raises(ConfigError, match="--attention-top-"):
        keep.check()


def _rows(root, run: str):
    with open_warehouse(root) as wh:
        sums = wh.sql(
            f"SELECT sent_id, decoding, step, layer, head, count(*) AS n, sum(weight) AS mass "
            f"FROM attention WHERE run_id = '{run}' GROUP BY ALL"
        )
        steps = wh.sql(
            f"SELECT sent_id, 'hyp' AS decoding, step, attn_kept_mass FROM target_steps "
            f"WHERE run_id = '{run}' UNION ALL SELECT sent_id, 'ref', step, attn_kept_mass "
            f"FROM reference_steps WHERE run_id = '{run}'"
        )
        options = json.loads(wh.sql(f"SELECT options FROM runs WHERE run_id = '{run}'")["options"][0])
        n = wh.sql(f"SELECT count(*) AS n FROM attention WHERE run_id = '{run}'")["n"][0]
    return sums, steps, options, n


def test_a_pruned_trace_keeps_top_k_and_top_p_and_records_the_kept_mass(tiny_dir, tmp_path) -> None:
    decoding = DecodeConfig(beam=2, topk=4, max_len=14, per_head=True)
    trace_run(tiny_dir, "task:dates:test:12", tmp_path, "all", decoding)
    trace_run(tiny_dir, "task:dates:test:12", tmp_path, "k3", decoding, attention_keep=AttentionKeep(top_k=3))
    trace_run(
        tiny_dir, "task:dates:test:12", tmp_path, "p8", decoding, attention_keep=AttentionKeep(top_p=0.8)
    )
    full_sums, full_steps, full_options, n_all = _rows(tmp_path, "all")
    assert (full_sums["mass"] - 1.0).abs().max() < 2e-3 and full_steps["attn_kept_mass"].null_count() == len(
        full_steps
    )
    assert "attention_keep" not in full_options
    for run, keep in (("k3", AttentionKeep(top_k=3)), ("p8", AttentionKeep(top_p=0.8))):
        sums, steps, options, n = _rows(tmp_path, run)
        assert options["attention_keep"] == {"top_k": keep.top_k, "top_p": keep.top_p}
        assert n < n_all
        assert len(sums) == len(full_sums)  # every row is still there, with some of its positions
        if keep.top_k:
            assert sums["n"].max() == 3
        else:
            assert sums["mass"].min() >= 0.8 - 2e-3  # float16 weights
        mean = sums.filter(sums["layer"] == -1).join(steps, on=["sent_id", "decoding", "step"])
        assert len(mean) == len(steps) and steps["attn_kept_mass"].null_count() == 0
        assert (mean["mass"] - mean["attn_kept_mass"]).abs().max() < 2e-3  # the sums check against it


def test_the_command_line_options(tiny_dir, tmp_path) -> None:
    args = ("trace", "--model", str(tiny_dir), "--corpus", "task:dates:test:4", "--device", "cpu")
    proc = run_cli(*args, "--warehouse", str(tmp_path / "wh"), "--attention-top-p", "2")
    assert_one_line_error(proc, "--attention-top-p must be in (0, 1] (got 2.0)")
    proc = run_cli(*args, "--warehouse", str(tmp_path / "wh"), "--attention-top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = "SELECT count(*) AS n FROM attention GROUP BY sent_id, decoding, step, layer, head"
    with open_warehouse(tmp_path / "wh") as wh:
        assert wh.sql(f"SELECT max(n) AS n FROM ({rows})")["n"][0] == 2
