"""Errors users can act on. Each is caught once, at the CLI edge, and printed as one line."""

from __future__ import annotations


class BeamscopeError(Exception):
    """Base class: a problem with the user's input, files or options (never a bug)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.message}"


class CorpusError(BeamscopeError):
    """A corpus file or task spec that cannot be read."""


class CheckpointError(BeamscopeError):
    """A model directory that is missing, corrupt or of another architecture."""


class WarehouseError(BeamscopeError):
    """A warehouse directory that is missing, foreign or damaged."""


class SchemaVersionError(WarehouseError):
    """A warehouse written by a schema version this beamscope cannot read."""


class ConfigError(BeamscopeError):
    """Options that contradict each other or are out of range."""


class QueryRefused(WarehouseError):
    """SQL the sandbox would not run or that failed: a refusal, a SQL error, a timeout (one line).

    ``reason`` tells them apart for callers that care: 'refused', 'error', 'timeout' or 'busy'.
    """

    def __init__(self, message: str, *, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason
