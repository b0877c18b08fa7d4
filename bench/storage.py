"""Bytes per target token of a prepared warehouse: Parquet, vectors, indexes.

The prepared warehouse: the bench's dates Transformer traces 5,000 training and 1,000 test
sentences (beam 5; the test run's neighbour agreement searches the training run), then
``build_indexes`` indexes both runs. Bytes are counted per target token (rows of
``target_steps``, both runs) for the Parquet tables, the LanceDB vectors, and the indexes (LanceDB
index files and the neighbour banks). ``--root DIR`` keeps the warehouse there.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import duckdb

from bench.common import dates_model
from pipeline.beam import DecodeConfig
from pipeline.models import resolve_device
from pipeline.trace import TraceConfig, trace
from pipeline.writer.indexes import build_indexes

CORPORA = ("task:dates:train:5000", "task:dates:test:1000")
DECODING = DecodeConfig(beam=5, max_len=20)
TARGETS = {"parquet": 150.0, "everything": 1000.0}


def prepare(root: Path, device_name: str = "cpu") -> list[str]:
    model = dates_model(resolve_device(device_name))
    runs = []
    for corpus in CORPORA:
        cfg = TraceConfig(
            model=str(model), corpus=corpus, warehouse=str(root), decoding=DECODING, device=device_name
        )
        runs.append(trace(cfg, progress=False).run_id)
    build_indexes(root, runs, min_rows=100_000, progress=False)
    return runs


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def measure(root: Path) -> dict[str, float]:
    steps = f"{root}/tables/target_steps/*/*.parquet"
    tokens = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{steps}', hive_partitioning = false)"
    ).fetchall()[0][0]
    vector_files = list((root / "vectors").rglob("*"))
    index_files = [p for p in vector_files if "_indices" in p.parts] + list((root / "banks").rglob("*"))
    parquet = _bytes(list((root / "tables").rglob("*.parquet")))
    vectors = _bytes([p for p in vector_files if "_indices" not in p.parts])
    indexes = _bytes(index_files)
    return {
        "target_tokens": tokens,
        "parquet": parquet / tokens,
        "vectors": vectors / tokens,
        "indexes": indexes / tokens,
        "everything": (parquet + vectors + indexes) / tokens,
    }


def main(device_name: str = "cpu", root: Path | None = None) -> dict[str, float]:
    work = root or Path(tempfile.mkdtemp(prefix="beamscope-storage-"))
    try:
        prepare(work, device_name)
        figures = measure(work)
    finally:
        if root is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"== storage (dates Transformer, {' + '.join(CORPORA)}, indexed) ==")
    print(f"target tokens           {figures['target_tokens']:>9,}")
    for name in ("parquet", "vectors", "indexes", "everything"):
        target = f"   (target <= {TARGETS[name]:.0f})" if name in TARGETS else ""
        print(f"{name + ' bytes / token':<24}{figures[name]:9.1f}{target}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.storage")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    main(args.device, args.root)
