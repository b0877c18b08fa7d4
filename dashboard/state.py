"""The warehouse the running dashboard serves (set once by ``create_app``)."""

from __future__ import annotations

from warehouse import Warehouse

_current: dict[str, Warehouse] = {}


def set_warehouse(wh: Warehouse) -> None:
    _current["wh"] = wh


def warehouse() -> Warehouse:
    return _current["wh"]
