"""User SQL in memory-capped worker processes: queries that allocate gigabytes outside DuckDB's
buffer manager fail in their worker, one line each, while other queries keep answering."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from schemas.errors import QueryRefused
from warehouse.isolated import IsolatedSQL

BOMBS = [  # each allocates gigabytes outside memory_limit when run unchecked
    "SELECT length(repeat('x', 1000000000))",
    "SELECT length(list(i)) FROM range(100000000) t(i)",
    "SELECT length(repeat('x', 3000000000))",
    "SELECT max(len(l)) FROM (SELECT list(i) AS l FROM range(100000000) t(i))",
]


def _peak_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture
def sql(warehouse_dir: Path):
    with IsolatedSQL(warehouse_dir, timeout_s=20, memory_cap=512 << 20) as executor:
        yield executor


def test_four_memory_bombs_at_once_fail_while_other_queries_answer(sql: IsolatedSQL) -> None:
    before = _peak_mb()
    refused: dict[str, str] = {}

    def bomb(query: str) -> None:
        try:
            sql.run(query)
            refused[query] = "answered"
        except QueryRefused as e:
            refused[query] = str(e)

    threads = [threading.Thread(target=bomb, args=(q,)) for q in BOMBS]
    for t in threads:
        t.start()
    answered = []
    while any(t.is_alive() for t in threads):
        try:  # every slot may be busy with a bomb: then 'busy', never a hang or a crash
            answered.append(sql.run("SELECT count(*) AS n FROM sentences").df["n"].item())
        except QueryRefused as e:
            assert e.reason == "busy", e
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert set(refused) == set(BOMBS)
    for query, outcome in refused.items():
        assert "memory" in outcome.lower() or "Out of Memory" in outcome, (query, outcome)
    assert _peak_mb() - before < 200  # the gigabytes were never this process' own
    assert sql.run("SELECT count(*) AS n FROM sentences").df["n"].item() == 144
    assert all(n == 144 for n in answered)


def test_a_worker_that_dies_is_replaced(sql: IsolatedSQL) -> None:
    assert sql.run("SELECT 1 AS one").df["one"].item() == 1
    dead = sql.pids()
    for pid in dead:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert sql.run("SELECT 2 AS two").df["two"].item() == 2  # a new worker answers
    assert sql.pids() and not set(sql.pids()) & set(dead)


def test_the_sandbox_still_refuses(sql: IsolatedSQL) -> None:
    with pytest.raises(QueryRefused, match="only SELECT"):
        sql.run("COPY sentences TO '/tmp/x.csv'")
    with pytest.raises(QueryRefused, match="not a warehouse view"):
        sql.run("SELECT * FROM '/etc/passwd'")
