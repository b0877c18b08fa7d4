"""Attribution checks shared by the built-in and Hugging Face model tests: a sentence's own output,
IG completeness, and captum's layer methods run directly (without beamscope's batching)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

from pipeline.attribution import Method, Produced, attribute
from pipeline.batching import pad
from pipeline.beam import DecodeConfig, beam_search


def produced(model, sources: list[str], max_len: int = 16) -> list[Produced]:
    """Each source with the model's greedy output (end of sentence included)."""
    with torch.inference_mode():
        src, mask = pad([model.src_ids(s) for s in sources], model.pad_id, model.device)
        decoded = beam_search(
            model, model.encode(src, mask), DecodeConfig(beam=1, max_len=max_len), trace=False
        )
    return [
        Produced(i, model.src_ids(s), [*d.ids, model.eos_id] if d.ended else list(d.ids))
        for i, (s, d) in enumerate(zip(sources, decoded, strict=True))
    ]


def frames(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tables["attribution"].to_pandas(), tables["attribution_steps"].to_pandas()


def assert_complete(
    model, items: list[Produced], n_steps: int = 32, rel: float | None = 0.01
) -> pd.DataFrame:
    """Per step, IG scores sum to logprob - baseline_logprob + captum's delta, the delta is at most
    ``rel`` of that difference (``n_steps`` Gauss-Legendre steps; None: not bounded), and every
    position has its row."""
    rows, steps = frames(attribute(model, items, Method("ig", n_steps)))
    sums = rows.groupby(["sent_id", "step"]).score.sum().rename("total").reset_index()
    steps = steps.merge(sums, on=["sent_id", "step"])
    gap = steps.logprob - steps.baseline_logprob
    assert len(steps) == sum(len(i.out_ids) for i in items)
    assert np.allclose(steps.total, gap + steps.delta, atol=1e-4)
    if rel is not None:
        assert (steps.delta.abs() <= rel * gap.abs() + 1e-3).all()
    assert (steps.method == "ig").all() and (steps.ig_steps == n_steps).all()
    for item in items:
        for t in range(len(item.out_ids)):
            mine = rows[(rows.sent_id == item.sent_id) & (rows.step == t)]
            assert sorted(mine[mine.side == "src"].position) == list(range(len(item.src_ids)))
            assert sorted(mine[mine.side == "tgt"].position) == list(range(t + 1))
    return steps


def captum_direct(model, item: Produced, step: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """captum's own layer attribution for one sentence and step (integrated from PAD ids)."""
    src = torch.tensor([list(item.src_ids)])
    tgt_in = torch.tensor([[model.bos_id, *item.out_ids[:step]]])
    mask = torch.ones_like(src, dtype=torch.bool)

    def f(src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        logits = model.forced(model.encode(src_ids, mask.expand(len(src_ids), -1)), tgt_ids).logits
        return logits[:, step].float().log_softmax(-1)[:, item.out_ids[step]]

    layers = list(model.embeddings())
    if method == "ig":
        pad_id = model.pad_id
        attr = LayerIntegratedGradients(f, layers).attribute(
            (src, tgt_in),
            baselines=(torch.full_like(src, pad_id), torch.full_like(tgt_in, pad_id)),
            n_steps=32,
        )
    else:
        attr = LayerGradientXActivation(f, layers).attribute((src, tgt_in))
    return attr[0][0].sum(-1).detach().numpy(), attr[1][0].sum(-1).detach().numpy()


def assert_equals_captum(model, items: list[Produced], method: str, check: int = 3) -> int:
    """beamscope's rows (batches cut mid-sentence) equal ``captum_direct`` within 1e-4, for the
    first ``check`` sentences; the number of steps compared."""
    rows, _ = frames(attribute(model, items, Method(method, 32), max_rows=5))
    checked = 0
    for item in items[:check]:
        for t in range(len(item.out_ids)):
            want_src, want_tgt = captum_direct(model, item, t, method)
            mine = rows[(rows.sent_id == item.sent_id) & (rows.step == t)].sort_values(["side", "position"])
            assert np.allclose(mine[mine.side == "src"].score, want_src, atol=1e-4)
            assert np.allclose(mine[mine.side == "tgt"].score, want_tgt, atol=1e-4)
            checked += 1
    return checked
