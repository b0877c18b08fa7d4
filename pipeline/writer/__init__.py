"""The one place that writes a warehouse: Parquet parts, LanceDB vectors and their scalar
indexes, neighbour banks, the manifest and ``beamscope.duckdb``. Both trace engines, what-if,
``index`` and ``migrate`` write through here; readers (``warehouse/``) never write.

A warehouse is a local directory or an S3 prefix (``schemas.layout.warehouse_root``). Every file
is replaced atomically: locally a temporary sibling is renamed over it; on S3 a file written
locally is sent in one PUT (an object is whole or absent). Whoever rewrites the manifest holds
the writer lock: an advisory ``flock`` locally, a create-only ``.lock`` object on S3.

Idempotent by construction, so a killed trace resumes to exactly the rows of an
uninterrupted one: a part file is complete or absent and rewriting it gives the same file; the
vectors of a part are deleted by ``sent_id`` range before they are added (a Lance commit is
atomic); a part counts as done only once the manifest, replaced under the writer lock, says so.
"""

from pipeline.writer.files import (
    atomic_path,
    atomic_write_text,
    locked,
    remove_orphan_temps,
    write_duckdb_file,
    write_manifest,
    write_parquet,
)
from pipeline.writer.indexes import DEFAULT_MIN_ROWS, IndexReport, build_indexes, save_bank
from pipeline.writer.run import RunWriter, run_row

__all__ = [
    "DEFAULT_MIN_ROWS",
    "IndexReport",
    "RunWriter",
    "atomic_path",
    "atomic_write_text",
    "build_indexes",
    "locked",
    "remove_orphan_temps",
    "run_row",
    "save_bank",
    "write_duckdb_file",
    "write_manifest",
    "write_parquet",
]
