"""Planted faults: each changes exactly its stage at its step, in the beam search and in forced
decoding alike; bad faults are one clear line; planted-fault runs record their faults."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.batching import pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.fault_runs import FaultConfig, fault_run_id, fault_runs
from pipeline.faults import MARGIN, Clean, Fault, FaultyModel, plan_faults
from schemas import ConfigError
from schemas.stages import Stage
from warehouse import open_warehouse

SOURCE, OUTPUT = "March 5th, 2021", "2021-03-05"
CFG = DecodeConfig(beam=3, topk=5, max_len=16)


def _traced(model, fault: Fault | None):
    """(beam-search steps, forced output, encoded) of SOURCE under ``fault``."""
    ids = model.src_ids(SOURCE)
    faulted = FaultyModel(model, {} if fault is None else {tuple(ids): fault})
    src, mask = pad([ids], model.pad_id, model.device)
    with torch.inference_mode():
        enc = faulted.encode(src, mask)
        decoded = beam_search(faulted, enc, CFG, trace=True)[0]
        tgt_in = torch.tensor([[model.bos_id, *model.tgt_ids(OUTPUT)]])
        forced = faulted.forced(enc, tgt_in)
    return decoded, forced, enc


@pytest.mark.parametrize("name", ["tiny", "tiny_lstm"])
def test_the_output_layer_reads_the_recorded_state(name, request) -> None:
    model = request.getfixturevalue(name)
    _, forced, _ = _traced(model, None)
    with torch.inference_mode():
        np.testing.assert_allclose(model.logits(forced.states), forced.logits, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny_lstm"])
def test_forced_step_by_step_equals_the_models_forced_decoding(name, request) -> None:
    model = request.getfixturevalue(name)
    _, forced, enc = _traced(model, None)
    with torch.inference_mode():
        ref = model.forced(enc, torch.tensor([[model.bos_id, *model.tgt_ids(OUTPUT)]]))
    for got, want in zip(
        (forced.logits, forced.cross_attention, forced.states),
        (ref.logits, ref.cross_attention, ref.states),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("decoding", ["beam", "forced"])
def test_each_fault_changes_its_stage_at_its_step_only(tiny, decoding) -> None:
    t = 3
    clean, clean_forced, clean_enc = _traced(tiny, None)

    def view(fault):
        d, f, e = _traced(tiny, fault)
        if decoding == "forced":
            return f.logits[0].numpy(), f.cross_attention[0].numpy(), f.states[0].numpy(), e
        return None, d.steps.attention, d.steps.states, e

    f = clean_forced
    base_logits, base_attn, base_states = (
        (f.logits[0].numpy(), f.cross_attention[0].numpy(), f.states[0].numpy())
        if decoding == "forced"
        else (None, clean.steps.attention, clean.steps.states)
    )
    # attention: the peak of every layer and head moves to position 2 at t, the first layer's rows
    # keep their weights (later layers read what it changed); earlier steps as they were
    _, attn, states, _ = view(Fault(Stage.ATTENTION, t, position=2))
    assert (attn[t].argmax(-1) == 2).all() and np.allclose(attn[:t], base_attn[:t], atol=1e-5)
    if decoding == "forced":  # per layer and head (the beam keeps their mean)
        assert np.allclose(np.sort(attn[t, 0], -1), np.sort(base_attn[t, 0], -1), atol=1e-5)
    assert not np.allclose(states[t], base_states[t], atol=1e-3)  # what it read changed the state
    # decoder: the state at t is the one given, read out by the output layer
    donor = tuple(float(x) for x in base_states[1])
    logits, attn, states, _ = view(Fault(Stage.DECODER, t, state=donor))
    np.testing.assert_allclose(states[t], np.asarray(donor), atol=1e-6)
    np.testing.assert_allclose(attn[: t + 1], base_attn[: t + 1], atol=1e-5)  # attention untouched
    if logits is not None:
        with torch.inference_mode():
            want = tiny.logits(torch.tensor([donor]))[0].numpy()
        np.testing.assert_allclose(logits[t], want, atol=1e-5)
    # prediction: the token's logit MARGIN below its rival's; states and attention untouched
    token = tiny.tgt_ids(OUTPUT)[t]
    logits, attn, states, _ = view(Fault(Stage.PREDICTION, t, token=token, rival=7))
    np.testing.assert_allclose(states[: t + 1], base_states[: t + 1], atol=1e-5)
    np.testing.assert_allclose(attn[: t + 1], base_attn[: t + 1], atol=1e-5)
    if logits is not None:
        assert logits[t, token] == pytest.approx(logits[t, 7] - MARGIN, abs=1e-5)
        np.testing.assert_allclose(np.delete(logits[t], token), np.delete(base_logits[t], token), atol=1e-5)
    # encoder: position 0's state is position 4's, the others are as they were
    _, _, _, enc = view(Fault(Stage.ENCODER, t, position=0, donor=4))
    got, want = enc.states[0].numpy(), clean_enc.states[0].numpy()
    np.testing.assert_allclose(got[0], want[4])
    np.testing.assert_allclose(got[1:], want[1:])


def test_bad_faults_are_one_clear_line(tiny) -> None:
    n_src, n_steps = 6, 5
    cases = [
        (Fault("nonsense", 1), "unknown fault stage 'nonsense'"),
        (Fault(Stage.SEARCH, 1), "unknown fault stage 'search'"),
        (Fault(Stage.ATTENTION, 5, position=1), "fault step 5 is beyond the sentence (steps 0..4)"),
        (Fault(Stage.ATTENTION, 1), "a attention fault needs its position"),
        (Fault(Stage.ENCODER, 1, position=0, donor=9), "fault donor 9 is not a source position (0..5)"),
        (Fault(Stage.PREDICTION, 1, token=1, rival=10**6), "fault rival 1000000 is not a target token id"),
    ]
    for fault, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            fault.check(n_src, n_steps, tiny)


@pytest.mark.parametrize("name", ["tiny", "tiny_lstm"])
def test_sentences_of_a_batch_carry_their_own_faults(name, request) -> None:
    """A batch of faulted sentences decodes as each sentence alone with its fault (and a sentence
    without a fault as the clean model)."""
    model = request.getfixturevalue(name)
    texts = ["March 5th, 2021", "05/03/21", "Fri 5 Mar 2021", "12 June 1999", "1 Jan 2000"]
    ids = [model.src_ids(t) for t in texts]
    faults = [
        Fault(Stage.ATTENTION, 2, position=1),
        Fault(Stage.ENCODER, 1, position=0, donor=2),
        Fault(Stage.PREDICTION, 0, token=5, rival=6),
        Fault(Stage.DECODER, 3, state=tuple([0.5] * model.net.config.d_model)),
        None,
    ]
    faulted = FaultyModel(model, {tuple(i): f for i, f in zip(ids, faults, strict=True) if f})

    def decode(rows: list[list[int]]):
        src, mask = pad(rows, model.pad_id, model.device)
        with torch.inference_mode():
            return beam_search(faulted, faulted.encode(src, mask), CFG, trace=True)

    together = decode(ids)
    for i, alone in enumerate(decode([row]) for row in ids):
        assert together[i].ids == alone[0].ids
        assert together[i].score == pytest.approx(alone[0].score, abs=1e-4)
    src, mask = pad(ids, model.pad_id, model.device)
    with torch.inference_mode():
        clean = beam_search(model, model.encode(src, mask), CFG)
    assert together[-1].ids == clean[-1].ids
    assert together[-1].score == pytest.approx(clean[-1].score, abs=1e-4)
    assert sum(t.score != pytest.approx(c.score, abs=1e-4) for t, c in zip(together, clean, strict=True)) >= 3


def test_planned_faults_are_valid_and_reproducible(tiny) -> None:
    clean = []
    for i, text in enumerate(["March 5th, 2021", "05/03/21", "Fri 5 Mar 2021", "12 June 1999"]):
        src = tiny.src_ids(text)
        with torch.inference_mode():
            s, m = pad([src], tiny.pad_id, tiny.device)
            d = beam_search(tiny, tiny.encode(s, m), CFG)[0]
        clean.append(Clean(i, src, [*d.ids, tiny.eos_id]))
    for stage in (Stage.ENCODER, Stage.DECODER, Stage.ATTENTION, Stage.PREDICTION):
        faults = plan_faults(tiny, clean, stage, seed=3)
        assert faults and faults == plan_faults(tiny, clean, stage, seed=3)
        assert all(f.stage == stage for f in faults.values())
        if stage == Stage.PREDICTION:
            assert all(f.token == clean[s].out_ids[f.step] != f.rival for s, f in faults.items())


def test_fault_runs_are_ordinary_runs_that_record_their_faults(calibrated_warehouse_dir) -> None:
    with open_warehouse(calibrated_warehouse_dir) as wh:
        runs = wh.sql(
            "SELECT run_id, options FROM runs WHERE run_id LIKE 'test.fault-%-n40-seed0' ORDER BY 1"
        )
        assert runs["run_id"].to_list() == sorted(fault_run_id("test", s, 40, 0) for s in Stage)
        for run, options in runs.iter_rows():
            planted = json.loads(options)["faults"]
            assert planted["of"] == "test" and run == fault_run_id("test", planted["stage"], 40, 0)
            assert 0 < len(planted["sentences"]) <= 40
            got = wh.sql("SELECT sent_id, reference FROM sentences WHERE run_id = ? ORDER BY sent_id", [run])
            clean = wh.sql(
                "SELECT sent_id, hypothesis FROM sentences WHERE run_id = 'test' AND sent_id IN "
                f"(SELECT sent_id FROM sentences WHERE run_id = '{run}') ORDER BY sent_id"
            )
            assert got["reference"].to_list() == clean["hypothesis"].to_list()  # the clean output
            assert sorted(int(s) for s in planted["sentences"]) == got["sent_id"].to_list()
        assert wh.default_run() not in runs["run_id"].to_list()  # pages do not open on a fault run
    with pytest.raises(ConfigError, match="unknown stage 'nonsense'"):
        fault_runs(FaultConfig(str(calibrated_warehouse_dir), "test", stages=("nonsense",)))
