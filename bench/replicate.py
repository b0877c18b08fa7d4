"""A 1,000,000-sentence warehouse replicated from one real traced run (for ``bench.scale``).

The source is ``task:dates:test:2000`` from the demo warehouse when there is one, else traced
here. Every table's rows are written again as ``sent_id + k * N`` for ``k`` in
``range(ceil(1e6 / N))`` under the run ``scale-1m``, all other columns identical, with pyarrow
(zstd) in the layout the pipeline writes (``tables/<table>/run=<run>/part-NNNNN.parquet``,
50,000 sentences a part, rows in ``sent_id`` order) and a manifest, so ``open_warehouse`` opens
it. The source warehouse's own runs are copied in too (the replicated run keeps its
``neighbours_run``, so ``bucket_accuracy`` finds its training run as it would in the demo). No
vectors. Cached under ``.beamscope/bench/scale-1m/<source fingerprint>/``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import CACHE, dates_model
from pipeline.writer.files import write_manifest
from schemas import PART_TABLES, TABLES
from schemas.layout import part_path, read_manifest, run_dir
from schemas.tables import RUN_TABLES

TARGET_SENTENCES = 1_000_000
PART_SENTENCES = 50_000
SCALE_RUN = "scale-1m"
SOURCE_CORPUS = "task:dates:test:2000"
SOURCE_RUN_SUFFIX = "dates-test-2000.test"
SOURCE_CANDIDATES = ("demo/warehouse",)  # env BEAMSCOPE_SCALE_SOURCE first; else traced here


# -- the source run --------------------------------------------------------------------------------


def _complete_source(root: Path) -> str | None:
    """The complete ``dates-test-2000`` run of the warehouse at ``root``, if it has one."""
    try:
        runs = read_manifest(root)["runs"]
    except Exception:
        return None
    for run_id, run in sorted(runs.items()):
        if run_id.endswith(SOURCE_RUN_SUFFIX) and run.get("status") == "complete":
            return run_id
    return None


def source_run(device_name: str) -> tuple[Path, str]:
    """A warehouse holding a real traced run of ``task:dates:test:2000``: the demo's, or traced here."""
    env = os.environ.get("BEAMSCOPE_SCALE_SOURCE")
    for cand in ([env] if env else []) + list(SOURCE_CANDIDATES):
        root = Path(cand)
        run = _complete_source(root)
        if run is not None:
            return root, run
    from pipeline.models import resolve_device
    from pipeline.trace import TraceConfig, trace

    root = CACHE / "scale-1m" / "source"
    model_dir = dates_model(resolve_device(device_name))
    print(f"no demo warehouse found; tracing {SOURCE_CORPUS} with {model_dir} into {root}")
    summary = trace(
        TraceConfig(
            model=str(model_dir), corpus=SOURCE_CORPUS, warehouse=str(root), vectors=False, device=device_name
        ),
        progress=False,
    )
    return root, summary.run_id


# -- building the 1M warehouse -------------------------------------------------------------------


def _parts(root: Path, table: str, run: str) -> list[Path]:
    return sorted(run_dir(root, table, run).glob("part-*.parquet"))


def _read_run(root: Path, table: str, run: str) -> pa.Table:
    """All rows of ``run`` in ``table``, parts in order (each part is sorted by sent_id)."""
    parts = [pq.read_table(p) for p in _parts(root, table, run)]
    if not parts:
        return TABLES[table].empty_table()
    return pa.concat_tables(parts, promote_options="default")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _is_built(root: Path, source: str, fingerprint: str) -> bool:
    try:
        run = read_manifest(root)["runs"].get(SCALE_RUN)
    except Exception:
        return False
    return bool(
        run
        and run.get("status") == "complete"
        and run.get("replicated_from") == source
        and run.get("source_fingerprint") == fingerprint
        and run.get("n_sentences", 0) >= TARGET_SENTENCES
        and run.get("part_sentences", 0) >= PART_SENTENCES // 2
    )


def _write_run_tables(root: Path, src_root: Path, src_run: str, n: int, replicas: int) -> None:
    """The run's one-file tables: the source's vocabulary; its clustered states once per replica
    (ids shifted as in the parts), so every cluster holds ``replicas`` times its states."""
    for table in RUN_TABLES:
        if table == "runs":
            continue
        src = _read_run(src_root, table, src_run)
        if table == "state_cluster_members":
            i = src.schema.get_field_index("sent_id")
            src = pa.concat_tables(
                [
                    src.set_column(i, "sent_id", pc.add(src["sent_id"], pa.scalar(k * n, pa.int64())))
                    for k in range(replicas)
                ]
            )
        elif table == "state_clusters":
            for col in ("n_states", "n_wrong"):
                i = src.schema.get_field_index(col)
                src = src.set_column(
                    i, col, pc.multiply(src[col], pa.scalar(replicas, src.schema.field(col).type))
                )
        path = part_path(root, table, SCALE_RUN, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_ids = pa.array([SCALE_RUN] * src.num_rows)
        src = src.set_column(src.schema.get_field_index("run_id"), "run_id", run_ids)
        pq.write_table(src.cast(TABLES[table]), path, compression="zstd")


def build(src_root: Path, src_run: str) -> tuple[Path, dict[str, Any]]:
    """The 1M-sentence warehouse (built, or reused from the cache); its root and build figures."""
    manifest = read_manifest(src_root)
    fingerprint = manifest["runs"][src_run]["fingerprint"]
    out = CACHE / "scale-1m" / fingerprint
    if _is_built(out, src_run, fingerprint):
        print(f"reusing {out} (built from {src_run}, fingerprint {fingerprint}; delete it to rebuild)")
        return out, {"reused": True, "build_s": None, **sizes(out, src_root, src_run)}

    src_rows = _read_run(src_root, "runs", src_run).to_pylist()[0]
    sentences = _read_run(src_root, "sentences", src_run)
    skipped = _read_run(src_root, "skipped", src_run)
    ids = [pc.max(t["sent_id"]).as_py() for t in (sentences, skipped) if t.num_rows]
    n = max(src_rows["n_sentences"], 1 + max(ids, default=-1))  # sent_ids of the source: 0 .. n-1
    replicas = math.ceil(TARGET_SENTENCES / n)
    per_part = max(1, PART_SENTENCES // n)
    n_parts = math.ceil(replicas / per_part)

    src_bytes = sum(_dir_bytes(run_dir(src_root, t, src_run)) for t in TABLES)
    need = src_bytes * replicas * 2  # bigger row groups than the pipeline's: a margin
    free = shutil.disk_usage(CACHE.resolve().parent if CACHE.exists() else Path.cwd()).free
    print(
        f"building {out}: {replicas} copies of {src_run} ({n:,} sentences, {src_bytes / 1e6:.1f} MB), "
        f"{n_parts} parts; free disk {free / 1e9:.1f} GB, about {need / 1e9:.1f} GB needed at most"
    )
    if need > free:
        raise RuntimeError(f"not enough disk for the scale warehouse: {free / 1e9:.1f} GB free")

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    # the source warehouse's complete runs, as they are (the training run feeds bucket_accuracy)
    kept = {r: v for r, v in manifest["runs"].items() if v.get("status") == "complete"}
    for table in TABLES:
        for run in kept:
            if run_dir(src_root, table, run).exists():
                shutil.copytree(run_dir(src_root, table, run), run_dir(tmp, table, run))

    write_s: dict[str, float] = {}
    for table in PART_TABLES:
        t0 = time.perf_counter()
        src = sentences if table == "sentences" else skipped if table == "skipped" else None
        src = src if src is not None else _read_run(src_root, table, src_run)
        sent_i, run_i = src.schema.get_field_index("sent_id"), src.schema.get_field_index("run_id")
        run_col = pa.array([SCALE_RUN] * src.num_rows, pa.string())
        for part in range(n_parts):
            ks = range(part * per_part, min((part + 1) * per_part, replicas))
            copies = [
                src.set_column(
                    sent_i, "sent_id", pc.add(src["sent_id"], pa.scalar(k * n, pa.int64()))
                ).set_column(run_i, "run_id", run_col)
                for k in ks
            ]
            chunk = pa.concat_tables(copies)
            path = part_path(tmp, table, SCALE_RUN, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            # pyarrow, not DuckDB's COPY: DuckDB cannot take Arrow's float16 (attention weights)
            pq.write_table(chunk, path, compression="zstd", row_group_size=262_144)
        write_s[table] = time.perf_counter() - t0

    now = dt.datetime.now(dt.timezone.utc)
    row = {
        **src_rows,
        "run_id": SCALE_RUN,
        "created_at": now,
        "finished_at": now,
        "status": "complete",
        "n_sentences": replicas * src_rows["n_sentences"],
        "n_skipped": replicas * src_rows["n_skipped"],
        # the parts hold per_part * n sentences each, not the source's part size
        "options": json.dumps({**json.loads(src_rows["options"]), "part_size": per_part * n}, sort_keys=True),
    }
    runs_path = part_path(tmp, "runs", SCALE_RUN, 0)
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row], schema=TABLES["runs"]), runs_path, compression="zstd")
    _write_run_tables(tmp, src_root, src_run, n, replicas)

    new = {k: v for k, v in manifest.items() if k != "indexes"}  # no vectors here
    new["runs"] = {
        **kept,
        SCALE_RUN: {
            "fingerprint": f"{fingerprint}-x{replicas}",
            "source_fingerprint": fingerprint,
            "replicated_from": src_run,
            "replicas": replicas,
            "part_sentences": per_part * n,
            "status": "complete",
            "n_parts": n_parts,
            "parts_done": list(range(n_parts)),
            "n_sentences": row["n_sentences"],
            "n_skipped": row["n_skipped"],
            "created_at": now.isoformat(),
            "split": src_rows["split"],
            "model_hash": src_rows["model_hash"],
        },
    }
    write_manifest(tmp, new)
    tmp.rename(out)
    build_s = time.perf_counter() - start
    print(f"built in {build_s:.1f} s (writing the {SCALE_RUN} tables: "
          + ", ".join(f"{t} {v:.1f} s" for t, v in write_s.items()) + ")")  # fmt: skip
    return out, {"reused": False, "build_s": build_s, "write_s": write_s, **sizes(out, src_root, src_run)}


def sizes(root: Path, src_root: Path, src_run: str) -> dict[str, Any]:
    """Rows and bytes on disk of every table of the scale run (printed), against the source run's."""
    replicas = read_manifest(root)["runs"][SCALE_RUN]["replicas"]
    tables = {}
    print(
        f"  {'table':16s} {'rows':>13s} {'on disk':>10s}   source run x {replicas} (as the pipeline wrote it)"
    )
    for table in PART_TABLES:
        parts = _parts(root, table, SCALE_RUN)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        size = sum(p.stat().st_size for p in parts)
        src = replicas * _dir_bytes(run_dir(src_root, table, src_run))
        tables[table] = {"rows": rows, "bytes": size, "parts": len(parts), "source_bytes_x_replicas": src}
        print(f"  {table:16s} {rows:13,d} {size / 1e6:7.1f} MB   {src / 1e6:7.1f} MB")
    total, whole = sum(t["bytes"] for t in tables.values()), _dir_bytes(root)
    print(f"  {'total':16s} {'':13s} {total / 1e6:7.1f} MB   ({whole / 1e6:.1f} MB with the copied runs)")
    return {"tables": tables, "bytes": total, "warehouse_bytes": whole}
