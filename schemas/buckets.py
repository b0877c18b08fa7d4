"""The buckets the marts group by, defined once: source length and reference-token frequency
(in the training run). Each bucketing is a list of (upper edge, label) and a last, open label;
the marts' SQL, the overview's links and the tests all read them from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucketing:
    """Buckets ``[edge_{i-1}, edge_i)`` labelled ``label_i``, then ``[last edge, inf)`` as ``last``."""

    edges: tuple[tuple[int, str], ...]
    last: str
    first_order: int  # the sort order of the first bucket (frequency keeps 0 for 'never seen')
    start: int = 0  # the lowest value of the first bucket

    def label(self, value: int) -> str:
        return next((name for edge, name in self.edges if value < edge), self.last)

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Each label's inclusive range of values (the last one open: up to 10**9)."""
        lows = [self.start, *(edge for edge, _ in self.edges)]
        highs = [edge - 1 for edge, _ in self.edges] + [10**9]
        labels = [name for _, name in self.edges] + [self.last]
        return dict(zip(labels, zip(lows, highs, strict=True), strict=True))

    def sql(self, column: str) -> tuple[str, str]:
        """SQL for a value's label and its sort order."""
        label = " ".join(f"WHEN {column} < {edge} THEN '{name}'" for edge, name in self.edges)
        order = " ".join(
            f"WHEN {column} < {edge} THEN {self.first_order + i}" for i, (edge, _) in enumerate(self.edges)
        )
        return (
            f"CASE {label} ELSE '{self.last}' END",
            f"CASE {order} ELSE {self.first_order + len(self.edges)} END",
        )


SOURCE_LENGTH = Bucketing(((10, "<10"), (20, "10-19"), (30, "20-29"), (40, "30-39"), (60, "40-59")), "60+", 0)
# reference-token frequency in the training run (order 0 is the bucket '0': never seen there)
TOKEN_FREQUENCY = Bucketing(
    ((10, "1-9"), (100, "10-99"), (1000, "100-999"), (10000, "1000-9999")), "10000+", 1, 1
)
