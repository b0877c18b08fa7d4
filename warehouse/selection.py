"""Sentences chosen by a user's SQL condition (``--where`` of ``attribute`` and ``perturb``)."""

from __future__ import annotations

from warehouse.sandbox import SafeSQL

MAX_SENTENCES = 50_000_000  # far above any run; the sandbox needs a row limit


def sentence_ids(warehouse: str, run: str, where: str, timeout_s: float = 300.0) -> list[int]:
    """The ``sent_id`` of each sentence of ``run`` whose ``sentences`` row satisfies ``where``,
    checked and run by the SQL sandbox (a refused or failing condition raises QueryRefused)."""
    quoted = run.replace("'", "''")
    query = f"SELECT sent_id FROM sentences WHERE run_id = '{quoted}' AND ({where}) ORDER BY sent_id"
    with SafeSQL(warehouse, timeout_s=timeout_s, max_rows=MAX_SENTENCES) as sandbox:
        return sandbox.run(query).df["sent_id"].to_list()
