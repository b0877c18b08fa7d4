"""Close words (Seq2Seq-Vis): each token's nearest tokens in the model's own embedding spaces.

A source token's neighbours are searched among the rows of the source embedding (what the
encoder reads), a target token's among the output layer's token vectors (what the decoder
scores). Exact cosine search over the whole vocabulary, for the tokens a run shows only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from pipeline.models.protocol import Seq2SeqAdapter
from pipeline.writer.run import RunWriter
from schemas import TABLES

K = 10
_BLOCK = 256  # query rows per matrix product (256 x a 250k vocabulary: 256 MB of float32)


def vectors(model: Seq2SeqAdapter, side: str) -> Tensor:
    """[vocab, d] the token vectors of ``side`` ('src': input embedding; 'tgt': output layer)."""
    weight = model.embeddings()[0].weight if side == "src" else model.output_embeddings()
    return weight.detach().float()


@torch.no_grad()
def nearest(weight: Tensor, ids: Iterable[int], k: int = K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``ids``: its ``k`` nearest other rows of ``weight`` by cosine.
    Returns (query ids [n], neighbour ids [n, k], similarities [n, k])."""
    query = np.array(sorted({i for i in ids if 0 <= i < len(weight)}), dtype=np.int64)
    unit = weight / weight.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = min(k, len(weight) - 1)
    out_ids, out_sims = [], []
    for lo in range(0, len(query), _BLOCK):
        q = torch.as_tensor(query[lo : lo + _BLOCK], device=weight.device)
        sims = unit[q] @ unit.T
        sims[torch.arange(len(q)), q] = -float("inf")  # not itself
        top = sims.topk(k, dim=-1)
        out_ids.append(top.indices.cpu().numpy())
        out_sims.append(top.values.cpu().numpy())
    if not out_ids:
        return query, np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return query, np.concatenate(out_ids), np.concatenate(out_sims)


def shown_tokens(writer: RunWriter) -> dict[str, set[int]]:
    """The token ids a run's tables show, per side: its sources', outputs' and references'."""
    tables = {"src": ("source_tokens",), "tgt": ("target_steps", "reference_steps")}
    return {
        side: {
            i for t in names for i in pc.unique(writer.read_table(t, ["token_id"])["token_id"]).to_pylist()
        }
        for side, names in tables.items()
    }


def word_neighbours(
    model: Seq2SeqAdapter, run_id: str, shown: dict[str, Iterable[int]], k: int = K
) -> pa.Table:
    """The ``word_neighbours`` rows of the token ids ``shown`` per side ('src', 'tgt')."""
    parts = []
    for side in ("src", "tgt"):
        query, ids, sims = nearest(vectors(model, side), shown.get(side, ()), k)
        n, kk = ids.shape
        parts.append(
            {
                "side": np.full(n * kk, side, dtype=object),
                "token_id": np.repeat(query, kk).astype(np.int32),
                "rank": np.tile(np.arange(1, kk + 1, dtype=np.int16), n),
                "neighbour_id": ids.reshape(-1).astype(np.int32),
                "similarity": sims.reshape(-1).astype(np.float32),
            }
        )
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    n = len(cols["side"])
    return pa.table({"run_id": np.full(n, run_id, dtype=object), **cols}, schema=TABLES["word_neighbours"])
