"""The beamscope version recorded in manifests and ``runs`` rows: the installed distribution's."""

from __future__ import annotations

import functools


@functools.cache
def beamscope_version() -> str:
    """The version of the installed ``beamscope`` distribution (pyproject's ``version``), or
    ``0.0.0+unknown`` when the code runs without being installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("beamscope")
    except PackageNotFoundError:
        return "0.0.0+unknown"
