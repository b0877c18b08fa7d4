"""beamscope: a trace warehouse and visual debugger for sequence-to-sequence models."""

from typing import Any

from schemas.version import beamscope_version

__all__ = ["__version__", "beamscope_version"]


def __getattr__(name: str) -> Any:
    """``__version__``, read from the installed distribution on first use (not at import)."""
    if name == "__version__":
        return beamscope_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
