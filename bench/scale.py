"""Marts and dashboard queries on a 1,000,000-sentence warehouse (``bench.replicate`` builds it
from one real traced run).

Timed (warm: one call first, then the median of ``REPEATS`` calls), on the source run in its own
warehouse and on the 1M run: every mart through ``Warehouse.mart(name, run, cache=False)`` (the
query, not the per-run cache), the overview page's query functions (all of them, as the page
calls them), the explorer's ``explore`` for a few filter/sort combinations, and
``sentence_view`` for sentences spread over the run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.replicate import SCALE_RUN, TARGET_SENTENCES, build, source_run
from dashboard import queries
from warehouse import open_warehouse
from warehouse.marts import MARTS

REPEATS = 5
TARGETS_MS = {"mart": 1000.0, "overview": 1000.0, "explorer": 300.0, "sentence": 150.0}


# -- timing ----------------------------------------------------------------------------------------


def median_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (milliseconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def overview_calls(wh: Any, run: str) -> dict[str, Callable[[], object]]:
    """What the overview page (``dashboard/pages/overview.py``) calls, in its order."""
    return {
        "run_info": lambda: queries.run_info(wh, run),
        "stage_counts": lambda: queries.stage_counts(wh, run),
        "tag_counts": lambda: queries.tag_counts(wh, run),
        "histogram(chrf,5)": lambda: queries.histogram(wh, run, "chrf", 5),
        "histogram(src_len,5)": lambda: queries.histogram(wh, run, "src_len", 5),
        "buckets": lambda: queries.buckets(wh, run),
        "confusions": lambda: queries.confusions(wh, run),
        "worst": lambda: queries.worst(wh, run),
    }


def explorer_cases(error_stage: str | None) -> dict[str, tuple[queries.Filters, int]]:
    """Filter/sort combinations of the explorer page, and the first row of the page asked for."""
    return {
        "no filter": (queries.Filters(), 0),
        f"stage={error_stage}": (queries.Filters(stage=error_stage), 0),
        "chrF 50-90, sort chrf desc": (queries.Filters(min_chrf=50, max_chrf=90, sort=[("chrf", "desc")]), 0),
        "text contains 'März'": (queries.Filters(text="März"), 0),
        "sort src_len desc": (queries.Filters(sort=[("src_len", "desc")]), 0),
        "no filter, rows 500,000+": (queries.Filters(), 500_000),
    }


def measure(wh: Any, run: str, n: int, error_stage: str | None) -> dict[str, float]:
    """Milliseconds of every timed call on ``run`` (``n`` sentences) of ``wh``."""
    out: dict[str, float] = {}
    for name in MARTS:
        out[f"mart {name}"] = median_ms(lambda name=name: wh.mart(name, run, cache=False))  # the query itself
    calls = overview_calls(wh, run)
    for name, fn in calls.items():
        out[f"  overview: {name}"] = median_ms(fn)
    out["overview page (all 8)"] = median_ms(lambda: [fn() for fn in calls.values()])
    for name, (filters, start) in explorer_cases(error_stage).items():
        if start >= n:
            start = n // 2
        out[f"explore: {name}"] = median_ms(
            lambda f=filters, s=start: queries.explore(wh, run, f, s, s + 100)
        )
    for frac, label in ((0.0, "first"), (0.5, "middle"), (1.0, "last")):
        sid = min(n - 1, int(frac * n))
        out[f"sentence_view ({label})"] = median_ms(lambda sid=sid: queries.sentence_view(wh, run, sid))
    return out


def target_of(name: str) -> float | None:
    if name.startswith("mart "):
        return TARGETS_MS["mart"]
    if name.startswith("overview page"):
        return TARGETS_MS["overview"]
    if name.startswith("explore"):
        return TARGETS_MS["explorer"]
    if name.startswith("sentence_view"):
        return TARGETS_MS["sentence"]
    return None  # parts of the overview: the page total has the target


def main(device_name: str = "auto") -> dict[str, Any]:
    t_all = time.perf_counter()
    print(f"== scale: marts and dashboard queries on {TARGET_SENTENCES:,} sentences ==")
    load_start = os.getloadavg()
    src_root, src_run = source_run(device_name)
    big_root, build_figures = build(src_root, src_run)

    with open_warehouse(src_root) as wh:
        stages = queries.stage_counts(wh, src_run)
        errors = stages.filter(stages["stage"] != "correct").sort(["n", "stage"], descending=[True, False])
        error_stage = errors["stage"][0] if errors.height else "correct"
        n_demo = queries.run_info(wh, src_run)["n_sentences"]
        demo = measure(wh, src_run, n_demo, error_stage)
    with open_warehouse(big_root) as wh:
        n_big = queries.run_info(wh, SCALE_RUN)["n_sentences"]
        big = measure(wh, SCALE_RUN, n_big, error_stage)
        threads = wh.sql("SELECT current_setting('threads') AS t").item()

    rows = []
    print(f"\nsource run: {src_run} ({n_demo:,} sentences, {src_root})")
    print(f"1M run:     {SCALE_RUN} ({n_big:,} sentences, {big_root})")
    print(f"threads: DuckDB {threads}, {os.cpu_count()} CPUs; median of {REPEATS} warm calls")
    print(f"\n{'name':44s} {'demo ms':>9s} {'1M ms':>10s} {'target':>8s}  pass")
    for name in demo:
        target = target_of(name)
        ok = None if target is None else big[name] <= target
        rows.append({"name": name.strip(), "demo_ms": demo[name], "scale_ms": big[name], "target_ms": target,
                     "pass": ok})  # fmt: skip
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        tgt = "" if target is None else f"{target:.0f}"
        print(f"{name:44s} {demo[name]:9.1f} {big[name]:10.1f} {tgt:>8s}  {verdict}")
    total = time.perf_counter() - t_all
    misses = [r["name"] for r in rows if r["pass"] is False]
    print(f"\n{len(misses)} of {sum(r['pass'] is not None for r in rows)} targets missed"
          + (f": {', '.join(misses)}" if misses else ""))  # fmt: skip
    load_end = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {load_end} on {os.cpu_count()} CPUs")
    print(f"total {total:.0f} s")
    return {
        "source_run": src_run,
        "source_warehouse": str(src_root),
        "scale_warehouse": str(big_root),
        "sentences": {"demo": n_demo, "scale": n_big},
        "build": build_figures,
        "results": rows,
        "misses": misses,
        "total_s": total,
        "load_average": {"start": load_start, "end": load_end},
    }


if __name__ == "__main__":
    main()
