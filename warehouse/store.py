"""Opening a warehouse for reading: an in-memory DuckDB with views, and the vector store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from schemas import TABLES, WarehouseError
from schemas.layout import (
    MANIFEST,
    check_run_id,
    connect_vectors,
    file_stamp,
    is_remote,
    part_path,
    read_manifest,
    run_dir,
    warehouse_root,
)
from warehouse.marts import MARTS, mart_sql, mart_statements, takes_run_filter
from warehouse.views import create_views, damaged_part_error, view_statements

MEMO_SIZE = 256  # results ``Warehouse.memo`` keeps
T = TypeVar("T")
CACHED_MARTS = {"bucket_accuracy", "error_summary", "token_confusions"}  # small results, costly at scale


class Warehouse:
    """A read-only view of a warehouse directory: SQL over its tables, its runs, its vectors."""

    def __init__(self, root: str | Path) -> None:
        self.root = warehouse_root(root)
        self.manifest = read_manifest(self.root)
        self.con = duckdb.connect(":memory:")
        if is_remote(self.root):  # DuckDB reads S3 through s3fs (no httpfs extension is installed)
            self.con.register_filesystem(self.root.fs)
        self.con.execute("SET parquet_metadata_cache = true")  # part footers are read once
        create_views(self.con, self.root)
        self._parts: dict[str, int] | None = None
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._run_ids: tuple[tuple[int, int, int], list[str]] | None = None

    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a query against the views; the result as a polars frame."""
        cur = self.con.cursor()  # one cursor per query: safe from many threads (a web server)
        try:
            rel = cur.sql(query, params=params or None)
            return rel.pl() if rel is not None else pl.DataFrame()
        finally:
            cur.close()

    def mart(self, name: str, run: str | None = None, cache: bool = True) -> pl.DataFrame:
        """One mart (see ``warehouse.marts``) as a polars frame, optionally for one run
        (small marts of a run are cached unless ``cache`` is False)."""
        if name not in MARTS:
            raise WarehouseError(f"unknown mart {name!r}; marts: {', '.join(MARTS)}")
        if run is None:
            return self.sql(f"SELECT * FROM {name}")
        run = self.resolve_run(run)
        if name not in CACHED_MARTS or not cache:
            return self._one_run(name, run)
        return self.memo(("mart", name, run), lambda: self._one_run(name, run))

    def memo(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` while the set of complete runs stays the same.

        For results about complete runs: such a run never changes, and what else they read (a
        training run) is another complete run. The newest ``MEMO_SIZE`` results are kept.
        """
        self.run_ids()  # a run that completed empties the cache
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > MEMO_SIZE:
                self._cache.popitem(last=False)
        return value

    def _one_run(self, name: str, run: str) -> pl.DataFrame:
        if takes_run_filter(name):
            return self.sql(mart_sql(name, "run_id = $run"), {"run": run})
        return self.sql(f"SELECT * FROM {name} WHERE run_id = ?", [run])

    def runs(self) -> pl.DataFrame:
        return self.sql("SELECT * FROM runs ORDER BY created_at")

    def run_ids(self) -> list[str]:
        """The complete runs, oldest first; re-read when the manifest was replaced (a run that
        completes rewrites it), so the many calls of a web page cost a ``stat``."""
        stamp = file_stamp(self.root / MANIFEST)
        with self._lock:
            if self._run_ids is not None and self._run_ids[0] == stamp:
                return list(self._run_ids[1])
        ids = self.runs()["run_id"].to_list()
        with self._lock:
            if self._run_ids is not None and self._run_ids[1] != ids:
                self._cache.clear()  # memo results may read the run that completed
            self._run_ids = (stamp, ids)
        return list(ids)

    def default_run(self) -> str:
        """The newest complete run that is not derived from another one (a perturbation, planted
        faults): what pages open on."""
        ids = self.run_ids()
        derived = set(
            self.memo(
                ("derived_runs",),
                lambda: self.sql(
                    "SELECT run_id FROM runs WHERE json_extract(options, '$.perturbation') IS NOT NULL "
                    "OR json_extract(options, '$.faults') IS NOT NULL"
                )["run_id"].to_list(),
            )
        )
        own = [r for r in ids if r not in derived]
        return (own or ids)[-1]

    def resolve_run(self, run: str | None) -> str:
        """``run`` if it is a complete run, else the only/newest run when ``run`` is None."""
        ids = self.run_ids()
        if not ids:
            raise WarehouseError("warehouse has no complete runs yet", path=str(self.root))
        if run is None:
            return self.default_run()
        if run not in ids:
            raise WarehouseError(f"no complete run {run!r}; runs: {', '.join(ids)}", path=str(self.root))
        return run

    def sentence_source(self, table: str, run: str, sent_id: int | None = None) -> str:
        """A ``read_parquet(...)`` expression over only the part file that holds ``sent_id`` of a
        complete ``run`` (parts hold ``part_size`` consecutive sentence ids; not so in perturbation
        runs, which keep the ids of the sentences they vary), or over the run's
        directory (no ``sent_id``, or that file is not where the layout says). Much faster than
        the view at scale: the view binds every part of every run."""
        check_run_id(run)
        if table not in TABLES:
            raise WarehouseError(f"unknown table {table!r}")
        part_size = self._part_sizes().get(run)
        path = (
            part_path(self.root, table, run, sent_id // part_size)
            if part_size and sent_id is not None
            else None
        )
        if path is None or not path.is_file():
            path = run_dir(self.root, table, run) / "*.parquet"
        elif not is_remote(path):
            path = path.resolve()
        return f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}', hive_partitioning = false)"

    def _part_sizes(self) -> dict[str, int]:
        if self._parts is None:
            rows = self.sql(  # a perturbation run keeps its sentences' ids: its parts are not by id
                "SELECT run_id, TRY_CAST(json_extract(options, '$.part_size') AS BIGINT) FROM runs "
                "WHERE json_extract(options, '$.perturbation') IS NULL"
            )
            self._parts = {r: n for r, n in rows.iter_rows() if n}
        return self._parts

    def vectors(self) -> Any:
        """The LanceDB connection of the warehouse's vectors."""
        return connect_vectors(self.root)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_warehouse(root: str | Path) -> Warehouse:
    return Warehouse(root)


def write_duckdb_file(root: str | Path) -> Path | None:
    """(Re)write ``beamscope.duckdb`` with the views and marts, for plain ``duckdb`` users (paths
    relative to the warehouse; none for an S3 warehouse): see ``pipeline.writer.files.write_duckdb_file``."""
    from pipeline.writer import files  # only here: readers need none of the writer's libraries

    root = warehouse_root(root)
    statements = view_statements(root, relative=True) + mart_statements()
    try:
        return files.write_duckdb_file(root, statements)
    except duckdb.Error as e:
        raise damaged_part_error(e) or e from None
