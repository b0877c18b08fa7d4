"""Vector tables (LanceDB): key look-ups.

LanceDB stores the states; the nearest-state search is the neighbour engine's
(``pipeline.neighbours``: a faiss bank per training run), so no LanceDB vector index is built.
Look-ups by key (``fetch``: a sentence's states, a neighbour's row) are fast once the scalar
indexes are built (``pipeline.writer.indexes.build_indexes``, run by ``beamscope index``).
"""

from __future__ import annotations

import lancedb
import pyarrow as pa


def fetch(table: lancedb.table.Table, where: str, columns: list[str] | None = None) -> pa.Table:
    """Rows of ``table`` matching ``where`` (e.g. ``"sent_id = 5 AND decoding = 'hyp'"``).

    Fast on big tables once ``build_indexes`` has indexed ``sent_id`` (BTREE).
    """
    query = table.search().where(where).limit(None)
    if columns is not None:
        query = query.select(list(columns))
    return query.to_arrow()
