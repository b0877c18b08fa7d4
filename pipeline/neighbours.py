"""Nearest training states (exact cosine k-NN in torch) and neighbour agreement.

A ``StateBank`` holds one training run's states with the token each is labelled with (the
token an encoder state stands for; the token that followed a decoder state). Agreement of a
query with a label is the share of its k nearest training states carrying that label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
import torch

from schemas.layout import open_vectors, read_manifest, vector_table, vectors_dir


@dataclass
class StateBank:
    vectors: torch.Tensor  # [n, d], L2-normalised
    labels: np.ndarray  # [n] token strings

    @classmethod
    def build(cls, vectors: np.ndarray, labels: np.ndarray) -> StateBank:
        v = torch.tensor(np.asarray(vectors, dtype=np.float32))
        return cls(torch.nn.functional.normalize(v, dim=-1), labels)

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine distances [n_queries, k] of the k nearest states, nearest first."""
        q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(queries, dtype=np.float32)), dim=-1)
        k = min(k, len(self.labels))
        chunk = max(1, 2**25 // max(1, len(self.labels)))  # similarity blocks of <= 128 MB
        idx, dist = [], []
        for start in range(0, len(q), chunk):
            sims, ids = (q[start : start + chunk] @ self.vectors.T).topk(k, dim=-1)
            idx.append(ids.numpy())
            dist.append((1 - sims).numpy())
        if not idx:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(idx), np.concatenate(dist)

    def agreement(self, queries: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
        """[n_queries] share of each query's k nearest states whose label equals its label."""
        idx, _ = self.nearest(queries, k)
        return (self.labels[idx] == np.asarray(labels, dtype=object)[:, None]).mean(1)


@dataclass
class TrainingStates:
    """The training run whose states answer "which training examples look like this?"."""

    run_id: str
    encoder: StateBank  # labelled by source token (last encoder layer)
    decoder: StateBank  # reference decoding, labelled by the next token


def find_training_run(root: Path, model_hash: str, exclude: str) -> str | None:
    """The newest complete train-split run of the same model in the warehouse, if any."""
    if not (root / "manifest.json").exists():
        return None
    runs = read_manifest(root)["runs"]
    found = [
        (r.get("created_at", ""), rid)
        for rid, r in runs.items()
        if rid != exclude
        and r.get("status") == "complete"
        and r.get("split") == "train"
        and r.get("model_hash") == model_hash
        and r.get("vectors", True)
    ]
    return max(found)[1] if found else None


def load_training_states(root: Path, run_id: str) -> TrainingStates | None:
    """Load a run's encoder and reference-decoding decoder states from LanceDB."""
    db = lancedb.connect(str(vectors_dir(root)))
    enc_t = open_vectors(db, vector_table("encoder_states", run_id))
    dec_t = open_vectors(db, vector_table("decoder_states", run_id))
    if enc_t is None or dec_t is None:
        return None
    enc = enc_t.to_arrow()
    top = max(enc["layer"].to_pylist()) if enc.num_rows else 0
    enc = enc.filter(enc["layer"].to_numpy() == top)
    dec = dec_t.to_arrow()
    dec = dec.filter(dec["decoding"].to_numpy(zero_copy_only=False) == "ref")

    def bank(table, label: str) -> StateBank:
        dim = table.schema.field("vector").type.list_size
        vectors = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
        return StateBank.build(vectors, np.asarray(table[label].to_pylist(), dtype=object))

    return TrainingStates(run_id, bank(enc, "token"), bank(dec, "next_token"))


# the agreement columns of each table, and the bank its states are searched in
AGREEMENT_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "source_tokens": ("encoder", ("nn_agreement",)),
    "target_steps": ("decoder", ("nn_agreement", "nn_ref_agreement")),
    "reference_steps": ("decoder", ("nn_agreement",)),
}


class AgreementQueue:
    """Rows of a part waiting for their neighbour agreement: states are queued per bank
    ('encoder' | 'decoder'), each table's rows point at query states and carry the labels to
    compare the neighbours' tokens with; ``columns`` then searches each bank once."""

    def __init__(self, training: TrainingStates | None, k: int) -> None:
        self.training, self.k = training, k
        self._clear()

    def _clear(self) -> None:
        self._queries: dict[str, list[np.ndarray]] = {"encoder": [], "decoder": []}
        self._rows: dict[str, list[tuple[np.ndarray, list[np.ndarray]]]] = {t: [] for t in AGREEMENT_COLUMNS}

    def states(self, bank: str, states: np.ndarray) -> np.ndarray:
        """Queue query ``states`` [n, d] of ``bank``; their query numbers."""
        start = sum(len(q) for q in self._queries[bank])
        self._queries[bank].append(states)
        return start + np.arange(len(states))

    def rows(self, table: str, queries: np.ndarray, labels: list[np.ndarray]) -> None:
        """The next rows of ``table``: their query numbers and, per agreement column, labels
        (None where the column has no label: the row's agreement is null)."""
        self._rows[table].append((queries, labels))

    def columns(self, n_rows: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
        """Per table, each agreement column over its ``n_rows`` rows (NaN = null); then empty."""
        found = {}  # per bank: [queries, k] the neighbours' tokens
        if self.training is not None:
            for name, queries in self._queries.items():
                if queries:
                    bank = self.training.encoder if name == "encoder" else self.training.decoder
                    idx, _ = bank.nearest(np.concatenate(queries), self.k)
                    found[name] = bank.labels[idx]
        out: dict[str, dict[str, np.ndarray]] = {}
        for table, (bank_name, names) in AGREEMENT_COLUMNS.items():
            pending = self._rows[table]
            if not pending:
                out[table] = {name: np.full(n_rows[table], np.nan, dtype=np.float32) for name in names}
                continue
            neighbours = found[bank_name][np.concatenate([rows for rows, _ in pending])]
            out[table] = {}
            for j, name in enumerate(names):
                labels = np.concatenate([ls[j] for _, ls in pending])
                share = (neighbours == labels[:, None]).mean(1).astype(np.float32)
                out[table][name] = np.where(labels == None, np.nan, share)  # noqa: E711
        self._clear()
        return out
