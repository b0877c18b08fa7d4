"""Crash safety: ``beamscope trace`` and ``beamscope index`` SIGKILLed at 20 (and 6) seeded points,
resumed each time, end with exactly the warehouse of an uninterrupted run.

Kill points: the crash hook (``BEAMSCOPE_CRASH_AT``) at every named point of the write path
(model loaded, batch decoded, Parquet temp written, Lance vectors deleted / added, manifest temp
written), each twice at a seeded pass, plus SIGKILLs from outside at seeded moments (early: model
load and first batch; or a seeded delay after the child finished a part: mid-batch or mid-write).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import lancedb
import pytest

from pipeline.tasks import generate, get_task
from schemas.layout import vectors_dir
from tests.reliability import harness as h

SEED = 7
PART, N_PARTS = 3, 48  # 144 sentences: more parts than 20 kills can get through
POINTS = {  # named point -> largest pass number to crash at (passes per part in brackets)
    "model_load": 1,
    "batch": 3,  # [1]
    "parquet": 12,  # [7 tables] (+ the runs row when a run starts)
    "lance_delete": 3,  # [2 kinds] (from the second part on)
    "lance_add": 3,  # [2]
    "manifest": 2,  # [1]
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "shards.tsv"
    pairs = generate(get_task("dates"), "test", PART * N_PARTS)
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def _trace(model: Path, corpus: Path, wh: Path) -> list[str]:
    return [
        "trace",
        "--model",
        str(model),
        "--corpus",
        str(corpus),
        "--warehouse",
        str(wh),
        "--run-name",
        "r",
        "--part-size",
        str(PART),
        "--batch-size",
        str(PART),
        "--beam",
        "3",
        "--max-len",
        "14",
        "--device",
        "cpu",
    ]


def kill_plan(rng: random.Random) -> list[tuple[str, str | float]]:
    """20 kills: each named point twice at a seeded pass, 4 early moments, 4 moments inside a part."""
    plan: list[tuple[str, str | float]] = [
        ("hook", f"{point}:{rng.randint(1, most)}") for point, most in POINTS.items() for _ in range(2)
    ]
    plan += [("early", round(rng.uniform(0.0, 0.15), 3)) for _ in range(4)]
    plan += [("in_part", round(rng.uniform(0.0, 0.08), 3)) for _ in range(4)]
    rng.shuffle(plan)
    return plan


@pytest.fixture(scope="module")
def traced(tmp_path_factory, tiny_dir, corpus) -> dict:
    """An uninterrupted trace, and the same trace killed 20 times and resumed after each kill."""
    d = tmp_path_factory.mktemp("crash")
    clean, killed, log = d / "clean", d / "killed", d / "children.log"
    assert h.run_cli_child(_trace(tiny_dir, corpus, clean), log) == 0, log.read_text()
    kills = []
    for kind, at in kill_plan(random.Random(SEED)):
        before = h.parts_done(killed, "r")
        argv = _trace(tiny_dir, corpus, killed)
        if kind == "hook":
            code = h.run_cli_child(argv, log, crash_at=str(at))
        elif kind == "early":
            code = h.run_cli_child(argv, log, kill_after=float(at))
        else:
            code = h.run_cli_child(
                argv, log, kill_after=float(at), kill_when=lambda b=before: h.parts_done(killed, "r") > b
            )
        kills.append((kind, at, code, before, h.parts_done(killed, "r"), h.temp_files(killed)))
        assert h.manifest(killed).get("runs", {}).get("r", {}).get("status") != "complete", (
            f"the run completed before kill {len(kills)} ({kind} {at}): {kills}"
        )
    resumed = h.run_cli_child(argv, log)
    return {"clean": clean, "killed": killed, "kills": kills, "resumed": resumed, "log": log}


def test_twenty_sigkills_then_resume_equals_an_uninterrupted_trace(traced) -> None:
    kills = traced["kills"]
    assert len(kills) == 20 and all(code == -9 for _, _, code, *_ in kills), kills
    assert traced["resumed"] == 0, traced["log"].read_text()[-2000:]
    counts = h.compare_runs(traced["clean"], traced["killed"], "r")  # Parquet and Lance, row for row
    assert counts["sentences"] == PART * N_PARTS and counts["attention"] > 0
    assert h.temp_files(traced["killed"]) == []
    # the kills did land mid-write: some left a temporary Parquet part or manifest (cleaned on resume)
    left = {p.name.split(".tmp-")[0] for *_, temps in kills for p in temps}
    assert any(name.startswith(".part-") for name in left) and ".manifest.json" in left, kills
    # and they were spread over the run, not all at its start
    assert len({after for *_, after, _ in kills}) >= 6, kills


def test_no_duplicate_keys_after_kills(traced) -> None:
    from schemas import KEYS, TABLES

    for table in TABLES:
        t = h.parquet_rows(traced["killed"], table, "r")
        assert h.duplicate_keys(t, KEYS[table]) == 0, table
    for kind, keys in h.VECTOR_KEYS.items():
        assert h.duplicate_keys(h.vector_rows(traced["killed"], kind, "r"), keys) == 0, kind


def _index_state(root: Path) -> dict:
    db = lancedb.connect(str(vectors_dir(root)))
    out = {"manifest": h.manifest(root).get("indexes")}
    for kind in h.VECTOR_KEYS:
        tbl = db.open_table(f"{kind}__r")
        indexes = sorted(
            (i.name, i.index_type, tuple(i.columns), tbl.index_stats(i.name).num_indexed_rows)
            for i in tbl.list_indices()
        )
        unindexed = [tbl.index_stats(i[0]).num_unindexed_rows for i in indexes]
        out[kind] = (indexes, tbl.count_rows(), unindexed)
    return out


def test_index_killed_six_times_then_rerun_equals_an_uninterrupted_index(traced, tmp_path) -> None:
    log = traced["log"]
    index = ["index", "--min-rows", "0", "--warehouse"]

    took = []
    for _ in range(2):  # the second run rebuilds the same indexes: as long as a killed child's
        start = time.monotonic()
        assert h.run_cli_child([*index, str(traced["clean"])], log) == 0
        took.append(time.monotonic() - start)
    rng = random.Random(SEED + 1)
    plan = [("hook", "manifest:1")] * 2 + [("time", rng.uniform(0.1, 0.6) * min(took)) for _ in range(4)]
    rng.shuffle(plan)
    codes = []
    for kind, at in plan:
        argv = [*index, str(traced["killed"])]
        codes.append(
            h.run_cli_child(argv, log, crash_at=str(at))
            if kind == "hook"
            else h.run_cli_child(argv, log, kill_after=float(at))
        )
    assert codes.count(-9) >= 5, (plan, codes)  # a timed kill may come after a fast child ended
    assert h.run_cli_child([*index, str(traced["killed"])], log) == 0
    assert _index_state(traced["killed"]) == _index_state(traced["clean"])
    h.compare_runs(traced["clean"], traced["killed"], "r")  # indexing changed no row
    assert h.temp_files(traced["killed"]) == []
