"""Close words of a token (``word_neighbours``, written when a trace completes), with their text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from schemas.layout import run_dir

if TYPE_CHECKING:
    from warehouse.store import Warehouse


def close_words(wh: Warehouse, run: str, side: str, token_id: int) -> pl.DataFrame | None:
    """rank, token, similarity of the nearest tokens of ``token_id`` (``side`` 'src' | 'tgt'); None
    when the run has no word neighbours (migrated from schema 4, or a what-if run)."""
    if not run_dir(wh.root, "word_neighbours", run).exists():
        return None
    neighbours, vocab = (wh.sentence_source(t, run) for t in ("word_neighbours", "vocabulary"))
    return wh.sql(
        f"SELECT n.rank, v.token, n.similarity FROM {neighbours} n LEFT JOIN {vocab} v "
        "ON v.side = n.side AND v.token_id = n.neighbour_id "
        "WHERE n.side = ? AND n.token_id = ? ORDER BY n.rank",
        [side, token_id],
    )
