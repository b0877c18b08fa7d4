"""A constructed search error: greedy decoding misses a reference the model scores higher.

``TableModel`` is a real adapter whose next-token distribution depends only on the previous
token (a fixed table), so every probability below is known exactly.
"""

import math

import numpy as np
import torch

from pipeline.beam import DecodeConfig
from pipeline.corpus import Example
from pipeline.models.protocol import Encoded, ForcedOutput, StepOutput
from pipeline.records import PartBuilder
from pipeline.trace import trace_part

TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "A", "B", "C"]
PAD, BOS, EOS, A, B, C = 0, 1, 2, 4, 5, 6
# P(next | previous): greedy takes A (0.6) then C (0.4) = "AC"; the reference "B" is better:
# score("AC</s>") = ln(.6 * .4 * 1) / 3 = -0.476 < score("B</s>") = ln(.4 * .99) / 2 = -0.463
TABLE = {BOS: {A: 0.6, B: 0.4}, A: {C: 0.4, EOS: 0.3, A: 0.3}, B: {EOS: 0.99, C: 0.01}, C: {EOS: 1.0}}


class TableModel:
    name, arch = "table", "table"
    bos_id, eos_id, pad_id, unk_id = BOS, EOS, PAD, 3
    vocab_size = len(TOKENS)
    max_src_len = None
    device = torch.device("cpu")
    hash = "table"

    def src_ids(self, text: str) -> list[int]:
        return [TOKENS.index(c) for c in text] + [EOS]

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [TOKENS[i] for i in ids]

    def tgt_ids(self, text: str) -> list[int]:
        return [TOKENS.index(c) for c in text]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [TOKENS[i] for i in ids]

    def word_starts(self, pieces: list[str], side: str = "tgt") -> list[bool]:
        return [True] * len(pieces)

    def detokenize(self, ids: list[int]) -> str:
        return "".join(TOKENS[i] for i in ids if i > 3)

    def encode(self, src, mask, all_layers=False) -> Encoded:
        return Encoded(states=torch.zeros(src.shape[0], src.shape[1], self.vocab_size), mask=mask)

    def start(self, enc, beam):
        return {"mask": enc.mask.repeat_interleave(beam, 0)}

    def step(self, enc, tokens, cache, edit=None) -> StepOutput:
        logits = torch.full((len(tokens), self.vocab_size), -1e4)
        for row, prev in enumerate(tokens.tolist()):
            for tok, p in TABLE.get(prev, {EOS: 1.0}).items():
                logits[row, tok] = math.log(p)
        mask = cache["mask"].float()
        attn = (mask / mask.sum(1, keepdim=True))[:, None, None, :]
        state = torch.nn.functional.one_hot(tokens, self.vocab_size).float()
        return StepOutput(logits, attn, state, cache)

    def reorder(self, cache, rows):
        return cache

    def forced(self, enc, tgt_in) -> ForcedOutput:
        cache = self.start(enc, 1)
        outs = [self.step(enc, tgt_in[:, t], cache) for t in range(tgt_in.shape[1])]
        return ForcedOutput(
            *(torch.stack([getattr(o, f) for o in outs], 1) for f in ("logits", "cross_attention", "state"))
        )

    def adjust_logprobs(self, logprobs, step, prefix=None, max_len=None):
        return logprobs


def run(beam: int) -> dict:
    model = TableModel()
    builder = PartBuilder(model, "r", "test")
    trace_part(
        model, [Example(0, "AB", "B", "mem", 1)], DecodeConfig(beam=beam, topk=3, max_len=5), builder, 8
    )
    return {k: v[0] for k, v in builder.tables()["sentences"].to_pydict().items()}


def test_greedy_misses_the_better_reference_and_is_blamed_on_search() -> None:
    s = run(beam=1)
    assert s["hypothesis"] == "AC" and s["reference"] == "B"
    assert np.isclose(s["hyp_score"], math.log(0.6 * 0.4) / 3, atol=1e-5)
    assert np.isclose(s["ref_score"], math.log(0.4 * 0.99) / 2, atol=1e-5)
    assert s["is_search_error"] is True
    assert s["blamed_stage"] == "search"
    assert s["first_divergence_step"] == 0


def test_a_wider_beam_finds_it() -> None:
    s = run(beam=2)
    assert s["hypothesis"] == "B" and s["exact_match"] is True
    assert s["is_search_error"] is False and s["blamed_stage"] is None


def test_a_model_error_is_not_a_search_error() -> None:
    TABLE[B] = {EOS: 0.2, C: 0.8}  # now the model itself prefers "BC" after B, and "AC" overall
    try:
        s = run(beam=2)
        assert s["hypothesis"] != "B" and s["ref_score"] < s["hyp_score"]
        assert s["is_search_error"] is False and s["blamed_stage"] != "search"
    finally:
        TABLE[B] = {EOS: 0.99, C: 0.01}
