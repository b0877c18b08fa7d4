"""User SQL in worker processes under an operating-system memory cap (the dashboard's console and
the explorer's free SQL conditions).

DuckDB's ``memory_limit`` bounds its buffer manager only: one huge value (``repeat('x', 1e9)``) or a
list of 1e8 elements is allocated outside it, and in the server's own process it could take the
server down. ``IsolatedSQL`` has the interface of ``SafeSQL`` (whose three layers still check and
lock every query) but runs each query in one of ``pool_size`` worker processes, each started fresh
(``spawn``: no copy of the server's memory), holding its own ``SafeSQL``, and capped by
``RLIMIT_DATA`` (its heap and private mappings) at ``memory_cap`` bytes above what it holds when
idle. A query that needs more fails in its worker — DuckDB's own out-of-memory error, or the
worker's death, after which a new worker takes its place — and the server answers one line. A
worker that does not answer ``GRACE_S`` after the query's own timeout is killed. Workers start on
first use (one at once, in the background), and are reused before another starts.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import queue
import resource
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import polars as pl

from schemas.errors import QueryRefused
from warehouse.sandbox import QueryResult, SafeSQL

GRACE_S = 5.0  # beyond a query's timeout before its worker is killed
DEFAULT_CAP = 1 << 30  # bytes a worker may allocate beyond its idle size
_MEMORY = "refused: the query needs more memory than the SQL console allows"


def _data_bytes() -> int:
    """This process' data size (VmData: heap and private mappings), what RLIMIT_DATA limits."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(conn: Connection, root: str, timeout_s: float, max_rows: int, cap: int) -> None:
    """A worker's life: open the sandbox, cap its memory, answer queries until the pipe closes."""
    sql = SafeSQL(root, timeout_s, max_rows, pool_size=1, memory_limit=f"{max(cap // 2, 64 << 20)}B")
    limit = _data_bytes() + cap
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    conn.send("ready")
    while True:
        try:
            query = conn.recv()
        except EOFError:
            return
        try:
            result = sql.run(query)
            buf = io.BytesIO()
            result.df.write_ipc(buf)
            conn.send(("ok", buf.getvalue(), result.truncated))
        except QueryRefused as e:
            exhausted = "Out of Memory" in str(e)  # then it retires: what it freed may stay taken
            conn.send(("refused", _MEMORY if exhausted else str(e), e.reason, exhausted))
            if exhausted:
                return
        except MemoryError:
            conn.send(("refused", _MEMORY, "error", True))
            return


class _Worker:
    def __init__(self, ctx: Any, args: tuple) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            raise EOFError
        self.conn.recv()

    def alive(self) -> bool:
        return self.proc.is_alive()

    def ask(self, query: str, wait: float) -> tuple:
        self.conn.send(query)
        if not self.conn.poll(wait):
            raise TimeoutError
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


class IsolatedSQL:
    """``SafeSQL``'s ``run`` / ``views`` / ``close``, each query in a memory-capped worker process."""

    def __init__(
        self,
        root: str | Path,
        timeout_s: float = 5.0,
        max_rows: int = 10_000,
        *,
        pool_size: int = 4,
        memory_cap: int = DEFAULT_CAP,
    ) -> None:
        probe = SafeSQL(root, timeout_s, max_rows, pool_size=1)  # refuses a bad warehouse here, at once
        self.views = probe.views
        probe.close()
        self.root, self.timeout_s = probe.root, float(timeout_s)
        self._args = (str(root), float(timeout_s), int(max_rows), int(memory_cap))
        self._ctx = multiprocessing.get_context("spawn")
        # last in, first out: a started worker is reused before an empty slot starts another
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(pool_size):
            self._idle.put(None)  # a slot; its worker starts on first use
        self._closed = False
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        threading.Thread(target=self._warm, daemon=True).start()

    def _warm(self) -> None:
        """Start the first worker now, in the background (a worker takes seconds to start)."""
        slot = self._idle.get()
        try:
            slot = slot or self._start()
        except QueryRefused:
            pass
        finally:
            self._idle.put(slot)

    def run(self, query: str) -> QueryResult:
        """Run one read-only query in a worker; QueryRefused (one line) if refused, failed, timed out
        or over the memory cap."""
        start = time.perf_counter()
        if self._closed:
            raise QueryRefused("the SQL executor is closed", reason="error")
        try:
            worker = self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            raise QueryRefused(
                "busy: every query slot is in use; try again in a moment", reason="busy"
            ) from None
        try:
            if worker is not None and not worker.alive():  # ended after its last query (the cap)
                self._replace(worker)
                worker = None
            worker = worker or self._start()
            answer = worker.ask(query, self.timeout_s + GRACE_S)
            if answer[0] == "refused" and answer[3]:  # the worker retires after this answer
                self._replace(worker)
                worker = None
        except TimeoutError:
            self._replace(worker)
            worker = None
            raise QueryRefused(f"query timed out after {self.timeout_s:g} s", reason="timeout") from None
        except (EOFError, OSError):  # the worker died: the cap (or a crash) ended it
            self._replace(worker)
            worker = None
            raise QueryRefused(_MEMORY, reason="error") from None
        finally:
            self._idle.put(worker)
        if answer[0] == "refused":
            raise QueryRefused(answer[1], reason=answer[2])
        df = pl.read_ipc(io.BytesIO(answer[1]))
        return QueryResult(df, answer[2], time.perf_counter() - start)

    def _start(self) -> _Worker:
        worker = _Worker(self._ctx, self._args)
        try:
            worker.ready(60)
        except (EOFError, OSError):
            worker.stop()
            raise QueryRefused("the SQL console's worker did not start", reason="error") from None
        with self._lock:
            self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker | None) -> None:
        if worker is not None:
            worker.stop()
            with self._lock:
                self._workers.remove(worker)

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        with self._lock:
            return [w.proc.pid for w in self._workers if w.proc.pid is not None and w.proc.is_alive()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    def __enter__(self) -> IsolatedSQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
