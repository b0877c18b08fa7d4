"""The one place that writes a warehouse: ``files`` (atomic files, the writer lock, the manifest,
Parquet parts, ``beamscope.duckdb``), ``run`` (one run's parts, LanceDB vectors and derived
tables) and ``indexes`` (neighbour bank files, the vector tables' scalar indexes). Both trace
engines, what-if, ``index`` and ``migrate`` write through here; readers (``warehouse/``) never write.

A warehouse is a local directory or an S3 prefix (``schemas.layout.warehouse_root``). Every file
is replaced atomically: locally a temporary sibling is renamed over it; on S3 a file written
locally is sent in one PUT (an object is whole or absent). Whoever rewrites the manifest holds
the writer lock: an advisory ``flock`` locally, a create-only ``.lock`` object on S3.

Idempotent by construction, so a killed trace resumes to exactly the rows of an
uninterrupted one: a part file is complete or absent and rewriting it gives the same file; the
vectors of a part are deleted by ``sent_id`` range before they are added (a Lance commit is
atomic); a part counts as done only once the manifest, replaced under the writer lock, says so.
"""
