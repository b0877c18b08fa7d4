"""Column buffers of one part and their assembly into Arrow tables (no per-row Python objects for
the large tables: columns grow by numpy blocks)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

Block = np.ndarray | list


class Columns:
    """Per table, per column, the blocks added so far; ``rows`` counts each table's rows."""

    def __init__(self) -> None:
        self.blocks: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.rows: dict[str, int] = defaultdict(int)

    def extend(self, table: str, **columns: Block) -> None:
        """Add one block per column (``sent_id`` counts the rows)."""
        if "sent_id" in columns:
            self.rows[table] += len(columns["sent_id"])
        for name, values in columns.items():
            self.blocks[table][name].append(values if isinstance(values, np.ndarray) else np.asarray(values))

    def table(self, name: str, schema: pa.Schema, run_id: str) -> pa.Table:
        """The blocks of ``name`` as one table of ``schema`` (``run_id`` filled in)."""
        cols = self.blocks.get(name, {})
        n_rows = sum(len(v) for v in cols.get("sent_id", []))
        arrays = [
            pa.array(np.full(n_rows, run_id, dtype=object), type=f.type)
            if f.name == "run_id"
            else _array(f, cols.get(f.name, []), n_rows)
            for f in schema
        ]
        return pa.Table.from_arrays(arrays, schema=schema)


def _array(field: pa.Field, blocks: list, n_rows: int) -> pa.Array:
    typ = field.type
    if field.name == "parent_id":  # the root's parent is null
        values = np.concatenate(blocks) if n_rows else np.zeros(0, dtype=np.int64)
        return pa.array(values, type=typ, mask=values < 0)
    if pa.types.is_fixed_size_list(typ):  # vectors
        dtype = typ.value_type.to_pandas_dtype()
        flat = np.concatenate(blocks).astype(dtype) if n_rows else np.zeros((0, 1), dtype)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=typ.value_type), typ.list_size)
    if field.name == "error_tags":
        return pa.array([r for block in blocks for r in block], type=typ)
    if pa.types.is_list(typ):
        return _lists([r for block in blocks for r in block], typ.value_type)
    values = np.concatenate(blocks) if n_rows else []
    if pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        return pa.array(values, type=typ, from_pandas=True)
    return pa.array(list(values), type=typ)


def _lists(values: list[np.ndarray], typ: pa.DataType) -> pa.Array:
    """A list column from per-row numpy arrays."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=typ))
