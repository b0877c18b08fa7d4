"""Neighbour agreement of a part's rows: the share of a state's k nearest training states (found by
the neighbour engine, ``pipeline.neighbours``) that carry a given token.

Rows queue their query states per bank while a part is built; ``AgreementQueue.columns`` then
searches each bank once for the whole part (one batched faiss search per bank and part).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.neighbours import NO_LABEL, Kind, TrainingStates
from pipeline.taxonomy import Evidence

# the share of a step's neighbours that attended most the source token the step attends most (the
# attention rule's; a column the blame reads, not stored per step)
ATTENTION_AGREEMENT = "nn_attention_agreement"
# the agreement columns of each table, and the bank its states are searched in
AGREEMENT_COLUMNS: dict[str, tuple[Kind, tuple[str, ...]]] = {
    "source_tokens": ("encoder", ("nn_agreement",)),
    "target_steps": ("decoder", ("nn_agreement", "nn_ref_agreement", ATTENTION_AGREEMENT)),
    "reference_steps": ("decoder", ("nn_agreement",)),
}
# which states a trace asks about: every one ('all', the per-token columns) or only the ones
# the blame rules read at a wrong sentence's first divergence step ('divergence')
AGREEMENT_MODES = ("all", "divergence")


class AgreementQueue:
    """Query states per bank, and per table the rows that read them with the labels to compare."""

    def __init__(self, training: TrainingStates | None, k: int) -> None:
        self.training, self.k = training, k
        self._queries: dict[Kind, list[np.ndarray]] = {"encoder": [], "decoder": []}
        self._rows: dict[str, list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]] = {
            t: [] for t in AGREEMENT_COLUMNS
        }

    def states(self, kind: Kind, states: np.ndarray) -> np.ndarray:
        """Queue query ``states`` [n, d] of bank ``kind``; their query numbers."""
        start = sum(len(q) for q in self._queries[kind])
        self._queries[kind].append(states)
        return start + np.arange(len(states))

    def rows(self, table: str, rows: np.ndarray, queries: np.ndarray, labels: list[np.ndarray]) -> None:
        """Rows ``rows`` of ``table`` (numbers within the part) read query states ``queries``;
        ``labels``: per agreement column, each row's token (None: that row's value is null)."""
        self._rows[table].append((rows, queries, labels))

    def columns(self, n_rows: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
        """Per table, each agreement column over its ``n_rows`` rows (NaN = null)."""
        found: dict[Kind, np.ndarray] = {}  # per bank: [queries, k] the neighbours' bank rows
        out: dict[str, dict[str, np.ndarray]] = {}
        for table, (kind, names) in AGREEMENT_COLUMNS.items():
            out[table] = {name: np.full(n_rows[table], np.nan, dtype=np.float32) for name in names}
            pending = self._rows[table]
            if not pending or self.training is None:
                continue
            bank = self.training.bank(kind)
            if kind not in found:
                found[kind] = bank.neighbour_rows(np.concatenate(self._queries[kind]), self.k)
            rows = np.concatenate([r for r, _, _ in pending])
            neighbours = found[kind][np.concatenate([q for _, q, _ in pending])]
            for j, name in enumerate(names):
                attended = name == ATTENTION_AGREEMENT
                labels = np.concatenate([ls[j] for _, _, ls in pending])
                known = labels != None  # noqa: E711 (object array)
                codes = np.full(len(labels), NO_LABEL, dtype=np.int32)
                codes[known] = bank.codes(labels[known], attended)
                share = (bank.rows_labels(neighbours, attended) == codes[:, None]).mean(1).astype(np.float32)
                out[table][name][rows] = np.where(known, share, np.nan)
        return out


@dataclass(frozen=True)
class PendingBlame:
    """A wrong sentence waiting for the agreement its blame reads."""

    sentence: int  # the sentence's row in the part
    evidence: Evidence
    base: dict[str, int]  # its first row in each agreement table


def focus(evidence: Evidence, n_src: int) -> tuple[int, int]:
    """The (source position, step) the neighbour rules read: the source token the reference's
    forced decoding attends most at the divergence step t*, and t*."""
    t = evidence.diverge
    return int(evidence.ref_attention[t, :n_src].argmax()), t


def divergence_agreement(
    p: PendingBlame, agreement: dict[str, dict[str, np.ndarray]]
) -> tuple[float | None, ...]:
    """Encoder (most attended token), decoder (produced token) and reference agreement at the
    sentence's divergence step, the lowest agreement of any of its source tokens' states, and the
    attention agreement of its decoder state there."""
    ev, t = p.evidence, p.evidence.diverge
    if t >= len(ev.ref_ids):
        return None, None, None, None, None
    n_src = ev.ref_attention.shape[1]
    pos, _ = focus(ev, n_src)
    src = agreement["source_tokens"]["nn_agreement"]
    enc = _value(src, p.base["source_tokens"] + pos)
    dec_col = agreement["target_steps"]["nn_agreement"]
    dec = _value(dec_col, p.base["target_steps"] + t) if t < len(ev.hyp_attention) else None
    ref = _value(agreement["reference_steps"]["nn_agreement"], p.base["reference_steps"] + t)
    own = src[p.base["source_tokens"] : p.base["source_tokens"] + n_src]
    att_col = agreement["target_steps"][ATTENTION_AGREEMENT]
    att = _value(att_col, p.base["target_steps"] + t) if t < len(ev.hyp_attention) else None
    return enc, dec, ref, None if np.isnan(own).all() else float(np.nanmin(own)), att


def _value(column: np.ndarray, row: int) -> float | None:
    v = float(column[row])
    return None if np.isnan(v) else v
