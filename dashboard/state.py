"""What the running dashboard serves (set once by ``create_app``): the warehouse and its sandbox."""

from __future__ import annotations

from warehouse import Warehouse
from warehouse.sandbox import SafeSQL

_current: dict[str, object] = {}


def set_warehouse(wh: Warehouse, sandbox: SafeSQL) -> None:
    _current.update(wh=wh, sandbox=sandbox)


def warehouse() -> Warehouse:
    return _current["wh"]  # type: ignore[return-value]


def sandbox() -> SafeSQL:
    """The read-only, time- and row-limited executor for user-written SQL."""
    return _current["sandbox"]  # type: ignore[return-value]
