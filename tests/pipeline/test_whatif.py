"""What-if re-decoding through the trace's records: prefix, attention override, source edit, save."""

import numpy as np
import polars as pl
import pytest

from pipeline.beam import DecodeConfig
from pipeline.models.protocol import AttentionEdit
from pipeline.whatif import Intervention, redecode, save_run
from schemas import ConfigError
from warehouse import open_warehouse

SOURCE, REFERENCE = "March 5th, 2021", "2021-03-05"
CFG = DecodeConfig(beam=4, topk=5, max_len=16, per_head=True)


def _attention(result, step: int | None = None) -> pl.DataFrame:
    a = pl.from_arrow(result.tables["attention"]).filter(pl.col("decoding") == "hyp")
    return a if step is None else a.filter(pl.col("step") == step)


def test_forced_prefix_then_the_best_continuation(tiny) -> None:
    prefix = tuple(tiny.tgt_ids("1987-1"))
    out = redecode(tiny, Intervention(SOURCE, REFERENCE, prefix), CFG)
    steps = pl.from_arrow(out.tables["target_steps"])
    assert steps["token_id"].to_list()[: len(prefix)] == list(prefix)
    assert out.tables["sentences"]["hypothesis"][0].as_py().startswith("1987-1")
    # the continuation is the beam's best: every finished hypothesis of the tree starts with the prefix
    nodes = pl.from_arrow(out.tables["beam_nodes"])
    assert (
        nodes.filter((pl.col("step") >= 1) & (pl.col("step") <= len(prefix)))["token_id"].is_in(prefix).all()
    )


def test_attention_override_sets_the_row_and_leaves_earlier_steps(tiny) -> None:
    base = redecode(tiny, Intervention(SOURCE, REFERENCE), CFG)
    t, pos = 3, (1, 4)
    edited = redecode(tiny, Intervention(SOURCE, REFERENCE, edit=AttentionEdit(t, pos, "set")), CFG)
    row = _attention(edited, t)
    assert row["layer"].n_unique() > 1 and row["head"].n_unique() > 1  # every layer and head, and the mean
    expected = np.where(np.isin(row["src_pos"].to_numpy(), pos), 0.5, 0.0)
    np.testing.assert_allclose(row["weight"].to_numpy(), expected, atol=1e-6)
    early = [
        r.filter(pl.col("step") < t).sort("step", "layer", "head", "src_pos")
        for r in map(_attention, (base, edited))
    ]
    np.testing.assert_allclose(early[0]["weight"].to_numpy(), early[1]["weight"].to_numpy(), atol=1e-6)
    # the reference is forced without the edit: its score stays the model's own
    assert edited.tables["sentences"]["ref_score"][0] == base.tables["sentences"]["ref_score"][0]


def test_an_edit_of_chosen_layers_and_heads_leaves_the_others(tiny) -> None:
    """Layer 1, heads 0 and 2 only: layer 0 and the other heads of layer 1 read the same queries as
    without the edit, so their rows are the unedited ones."""
    t = 3
    base = _attention(redecode(tiny, Intervention(SOURCE, REFERENCE), CFG), t).sort(
        "layer", "head", "src_pos"
    )
    edit = AttentionEdit(t, (1,), "set", layers=(1,), heads=(0, 2))
    row = _attention(redecode(tiny, Intervention(SOURCE, REFERENCE, edit=edit), CFG), t).sort(
        "layer", "head", "src_pos"
    )
    chosen = (pl.col("layer") == 1) & pl.col("head").is_in([0, 2])
    edited = row.filter(chosen)
    assert edited.height > 0 and set(edited.filter(pl.col("src_pos") == 1)["weight"]) == {1.0}
    others = pl.col("layer").is_in([0, 1]) & ~chosen
    np.testing.assert_allclose(row.filter(others)["weight"], base.filter(others)["weight"], atol=1e-6)


def test_edited_source(tiny) -> None:
    out = redecode(tiny, Intervention("March 6th, 2021"), CFG)
    src = pl.from_arrow(out.tables["source_tokens"])
    assert src["token"].to_list() == tiny.src_pieces(tiny.src_ids("March 6th, 2021"))
    assert out.tables["sentences"]["reference"][0].as_py() is None


@pytest.mark.parametrize(
    ("intervention", "message"),
    [
        (Intervention("  "), "empty"),
        (Intervention(SOURCE, prefix=tuple([5] * 16)), "longer than"),
        (Intervention(SOURCE, prefix=(10**6,)), "vocabulary"),
        (Intervention(SOURCE, edit=AttentionEdit(2, (999,))), "source positions"),
        (Intervention(SOURCE, edit=AttentionEdit(16, (1,))), "step must be"),
        (Intervention(SOURCE, edit=AttentionEdit(2, (1,), "scale", -1.0)), "factor"),
        (Intervention(SOURCE, edit=AttentionEdit(2, (1,), "scale", float("nan"))), "factor"),
        (Intervention(SOURCE, edit=AttentionEdit(2, (1,), layers=(7,))), r"layers must be 0\.\.1"),
        (Intervention(SOURCE, edit=AttentionEdit(0, (1,), heads=(9,))), r"heads must be 0\.\.3"),
    ],
)
def test_bad_interventions_are_refused(tiny, intervention, message) -> None:
    with pytest.raises(ConfigError, match=message):
        redecode(tiny, intervention, CFG)


def test_saved_what_if_is_a_complete_run(tiny, warehouse_dir, tmp_path) -> None:
    import shutil

    copy = tmp_path / "wh"
    shutil.copytree(warehouse_dir, copy)
    out = redecode(tiny, Intervention(SOURCE, REFERENCE, tuple(tiny.tgt_ids("20"))), CFG)
    with open_warehouse(copy) as wh:
        base = wh.sql("SELECT * FROM runs WHERE run_id = 'beam4'").row(0, named=True)
    save_run(copy, "what-if-1", out, base, tiny)
    with open_warehouse(copy) as wh:
        assert "what-if-1" in wh.run_ids()
        got = wh.sql("SELECT hypothesis FROM sentences WHERE run_id = 'what-if-1'").item()
        n_steps = wh.sql("SELECT count(*) FROM target_steps WHERE run_id = 'what-if-1'").item()
    assert got == out.tables["sentences"]["hypothesis"][0].as_py()
    assert n_steps == out.tables["target_steps"].num_rows


def test_redecoding_unchanged_reproduces_the_traced_sentence(tiny, train_warehouse_dir) -> None:
    """No intervention, the run's settings and training states: the same hypothesis, the same
    blamed stage and the same neighbour agreement as the trace wrote."""
    import json

    from pipeline.neighbours import training_states
    from pipeline.taxonomy import Taxonomy

    training = training_states(train_warehouse_dir, "train", build=False)
    with open_warehouse(train_warehouse_dir) as wh:
        run = wh.sql("SELECT * FROM runs WHERE run_id = 'test'").row(0, named=True)
        wrong = wh.sql(
            "SELECT * FROM sentences WHERE run_id = 'test' AND NOT exact_match ORDER BY sent_id LIMIT 5"
        )
        steps = wh.sql("SELECT sent_id, step, nn_agreement FROM target_steps WHERE run_id = 'test'")
    decoding = DecodeConfig(**json.loads(run["decoding"]))
    taxonomy = Taxonomy.from_options(json.loads(run["options"])["taxonomy"])
    assert wrong.height > 0
    for s in wrong.iter_rows(named=True):
        out = redecode(tiny, Intervention(s["source"], s["reference"]), decoding, training, taxonomy)
        again = out.tables["sentences"].to_pylist()[0]
        assert (again["hypothesis"], again["blamed_stage"]) == (s["hypothesis"], s["blamed_stage"])
        stored = steps.filter(pl.col("sent_id") == s["sent_id"]).sort("step")["nn_agreement"].to_numpy()
        np.testing.assert_allclose(out.tables["target_steps"]["nn_agreement"].to_numpy(), stored, atol=1e-6)
