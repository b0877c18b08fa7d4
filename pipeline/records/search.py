"""Search stage records: every candidate the beam ranked (``beam_nodes``) and whether the beam
lost a reference the model scores higher (the sentence's search columns)."""

from __future__ import annotations

import numpy as np

from pipeline.beam import STATUS_NAMES, BeamTree, Decoded
from pipeline.forced import ForcedTrace
from pipeline.metrics import is_search_error

_STATUS = np.array(STATUS_NAMES, dtype=object)


def beam_node_rows(tree: BeamTree, tgt_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """``beam_nodes`` rows: the search tree, node 0 the root."""
    return dict(
        node_id=np.arange(len(tree.parent)),
        parent_id=np.where(tree.parent >= 0, tree.parent, -1),
        step=tree.step,
        token=tgt_tokens[tree.token_id],
        token_id=tree.token_id,
        token_logprob=tree.token_logprob,
        score=tree.score,
        rank_in_beam=tree.rank,
        status=_STATUS[tree.status],
        on_best_path=tree.on_best_path,
    )


def sentence_columns(dec: Decoded, ref: ForcedTrace | None, exact: bool | None) -> dict[str, list]:
    """``sentences`` columns of the search: the scores it ranked by and its verdict."""
    return dict(
        hyp_logprob=[dec.logprob],
        hyp_score=[dec.score],
        ref_logprob=[None if ref is None else ref.logprob],
        ref_score=[None if ref is None else ref.score],
        is_search_error=[None if ref is None else is_search_error(bool(exact), dec.score, ref.score)],
        n_beam_nodes=[len(dec.tree.parent)],
    )
