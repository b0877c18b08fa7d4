"""Bootstrap confidence intervals of the bucket rates (compare-mt's procedure): the run's sentences
are resampled with replacement ``samples`` times (seeded), each resample's token F-measure and exact
match are computed per bucket from the ``sentence_buckets`` mart (the per-sentence counts that
``bucket_accuracy`` sums), and the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
percentiles of the resampled values. Cost: resamples x sentences, so a run of more than
``DRAWS / SAMPLES`` sentences gets fewer resamples (``DRAWS / sentences``, at least 100); its
intervals are narrow anyway."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from warehouse.store import Warehouse

SAMPLES = 1000
LEVEL = 0.95
SEED = 0
CHUNK_CELLS = 20_000_000  # replicate counts held at once (samples x sentences)
DRAWS = 200_000_000  # most sentence draws per run (1,000 resamples up to 200,000 sentences)
INTERVAL_COLUMNS = ["f_low", "f_high", "exact_low", "exact_high"]
Stats = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # replicate counts -> (F, exact) per bucket


def bucket_intervals(
    wh: Warehouse, run: str, samples: int = SAMPLES, level: float = LEVEL, seed: int = SEED
) -> pl.DataFrame:
    """Per (bucketing, bucket) of ``run``: f_low, f_high, exact_low, exact_high (exact match only for
    source-length buckets, where a sentence lies in one bucket). Remembered while runs stay the same."""
    key = ("bucket_intervals", run, samples, level, seed)
    return wh.memo(key, lambda: _intervals(wh.mart("sentence_buckets", run), samples, level, seed))


def _intervals(per: pl.DataFrame, samples: int, level: float, seed: int) -> pl.DataFrame:
    keys = per.select("bucketing", "bucket").unique(maintain_order=True)
    if per.is_empty():
        return keys.with_columns(pl.lit(None, pl.Float64).alias(c) for c in INTERVAL_COLUMNS)
    sents = {s: i for i, s in enumerate(sorted(set(per["sent_id"].to_list())))}
    columns = {b: j for j, b in enumerate(keys.iter_rows())}
    at = (
        np.fromiter((sents[s] for s in per["sent_id"]), np.int64, per.height),
        np.fromiter(
            (columns[b] for b in per.select("bucketing", "bucket").iter_rows()), np.int64, per.height
        ),
    )

    def by_sentence(values: pl.Series) -> np.ndarray:  # [sentences, buckets]
        out = np.zeros((len(sents), keys.height))
        np.add.at(out, at, values.fill_null(0).cast(pl.Float64).to_numpy())
        return out

    ref, hyp, matched = (by_sentence(per[c]) for c in ("ref_tokens", "hyp_tokens", "matched"))
    member, exact = by_sentence(per["exact_match"].is_not_null()), by_sentence(per["exact_match"])
    f, e = _resampled(
        len(sents),
        samples,
        seed,
        lambda c: (2 * (c @ matched) / (c @ hyp + c @ ref), (c @ exact) / (c @ member)),
    )
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    out = {"f_low": (f, lo), "f_high": (f, hi), "exact_low": (e, lo), "exact_high": (e, hi)}
    return keys.with_columns(
        pl.Series(name, [_percentile(x[:, j], q) for j in range(keys.height)], pl.Float64)
        for name, (x, q) in out.items()
    )


def _resampled(n: int, samples: int, seed: int, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
    """``stats(counts)`` over ``samples`` resamples (counts [replicates, n] of each sentence drawn)."""
    rng = np.random.default_rng(seed)
    samples = min(samples, max(100, DRAWS // n))
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    step = max(1, CHUNK_CELLS // n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, samples, step):
            counts = rng.multinomial(n, np.full(n, 1 / n), size=min(step, samples - start)).astype(float)
            parts.append(stats(counts))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _percentile(values: np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile of the finite values (None when a bucket never has any)."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if len(finite) else None
