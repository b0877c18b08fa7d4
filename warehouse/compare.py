"""Two runs over the same corpus, paired sentence by sentence: score deltas with paired-bootstrap
confidence intervals and p-values, the sentences B fixed and broke, the confusions that vanished
or appeared. Pure functions over a warehouse: ``beamscope compare`` and the dashboard's compare
pages both use them.

The bootstrap is sacrebleu's paired test (compare-mt's and Moses' procedure): ``samples`` resamples
of the sentences with replacement, drawn once with sacrebleu's seed and shared by every metric, each
resample scored from the sentences' sufficient statistics; the p-value is sacrebleu's (equal to
its ``PairedTest``), the interval of the delta B - A the ``(1 - level) / 2`` and ``(1 + level) / 2``
percentiles of the resampled deltas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from schemas import WarehouseError
from warehouse.store import Warehouse

SAMPLES = 1000
LEVEL = 0.95
SEED = 12345  # sacrebleu's default SACREBLEU_SEED: the same resamples as its PairedTest
CHUNK_CELLS = 4_000_000  # resampled sentence indices held at once
# a sentence's outcome from A's row ``a`` to B's row ``b`` (sentences with a reference only)
OUTCOMES = {
    "fixed": "NOT a.exact_match AND b.exact_match",
    "broken": "a.exact_match AND NOT b.exact_match",
    "both_wrong": "NOT a.exact_match AND NOT b.exact_match",
    "both_right": "a.exact_match AND b.exact_match",
}
OUTCOME_LABELS = {  # templates: {a} and {b} are the runs' names
    "fixed": "wrong in {a}, right in {b}",
    "broken": "right in {a}, wrong in {b}",
    "both_wrong": "wrong in both",
    "both_right": "right in both",
}
OUTCOME_SQL = "CASE " + " ".join(f"WHEN {c} THEN '{o}'" for o, c in OUTCOMES.items()) + " END"
# the pairs: A's run id, then B's (parameters)
PAIRS_FROM = (
    "FROM sentences a JOIN sentences b ON b.sent_id = a.sent_id "
    "WHERE a.run_id = ? AND b.run_id = ? AND a.reference IS NOT NULL"
)
LOWER_IS_BETTER = {"TER"}


class PairError(WarehouseError):
    """Two runs that cannot be compared: one is not a complete run, or they read other corpora."""


def check_pair(wh: Warehouse, run_a: str | None, run_b: str | None) -> tuple[str, str]:
    """The two run ids, or PairError saying why they cannot be paired."""
    ids = wh.run_ids()
    for name, run in (("A", run_a), ("B", run_b)):
        if run is not None and not isinstance(run, str):
            raise PairError(f"run {name} is given more than once")
        if not run:
            raise PairError(f"run {name} is missing: compare two runs as ?a=RUN&b=RUN")
        if run not in ids:
            raise PairError(f"no complete run {run!r} (run {name}) in this warehouse")
    rows = wh.sql(
        "SELECT run_id, corpus, json_extract_string(options, '$.corpus_hash') AS hash FROM runs "
        "WHERE run_id IN (?, ?)",
        [run_a, run_b],
    )
    corpus = {r["run_id"]: r for r in rows.iter_rows(named=True)}
    ca, cb = corpus[run_a], corpus[run_b]
    if ca["hash"] != cb["hash"]:
        same_name = ca["corpus"] == cb["corpus"]
        what = (
            f"{ca['corpus']!r} with content {ca['hash']} and {cb['hash']}"
            if same_name
            else f"{ca['corpus']!r} and {cb['corpus']!r}"
        )
        raise PairError(
            f"runs {run_a!r} and {run_b!r} were traced on different corpora ({what}); "
            "only runs over the same corpus pair sentence by sentence"
        )
    return run_a, run_b


def same_corpus_runs(wh: Warehouse, run: str) -> list[str]:
    """The other complete runs traced on ``run``'s corpus (oldest first)."""
    corpus = "json_extract_string(options, '$.corpus_hash')"
    rows = wh.sql(
        f"SELECT run_id FROM runs WHERE run_id <> ? "
        f"AND {corpus} = (SELECT {corpus} FROM runs WHERE run_id = ?) ORDER BY created_at",
        [run, run],
    )
    done = set(wh.run_ids())
    return [r for r in rows["run_id"].to_list() if r in done]


def outcome_condition(outcome: str) -> str:
    """``sent_id IN (...)``: the sentences of run A (first parameter) whose outcome against run B
    (second parameter) is ``outcome`` (one of ``OUTCOMES``)."""
    return f"sent_id IN (SELECT a.sent_id {PAIRS_FROM} AND {OUTCOMES[outcome]})"


def sentence_pairs(wh: Warehouse, run_a: str, run_b: str) -> pl.DataFrame:
    """The sentences with a reference that both runs traced, with both hypotheses and the outcome."""
    return wh.sql(
        "SELECT a.sent_id, a.source, a.reference, a.hypothesis AS hyp_a, b.hypothesis AS hyp_b, "
        f"a.exact_match AS em_a, b.exact_match AS em_b, {OUTCOME_SQL} AS outcome "
        f"{PAIRS_FROM} ORDER BY a.sent_id",
        [run_a, run_b],
    )


def outcome_counts(pairs: pl.DataFrame) -> dict[str, int]:
    """Sentences per outcome (every outcome present, zero when none)."""
    counts = dict(pairs.group_by("outcome").len().iter_rows())
    return {o: int(counts.get(o, 0)) for o in OUTCOMES}


def paired_scores(pairs: pl.DataFrame, samples: int = SAMPLES, level: float = LEVEL) -> pl.DataFrame:
    """Corpus BLEU, chrF, TER and exact match of A and B with the delta B - A, its bootstrap
    interval (delta_low, delta_high) and p-value; ``lower_is_better`` marks TER."""
    metrics = {"BLEU": BLEU(), "chrF": CHRF(), "TER": TER()}
    stats, real = {}, {}
    for name, metric in metrics.items():
        for side, s in zip("ab", _segment_stats(metric, pairs), strict=True):
            real[name, side] = metric._aggregate_and_compute(s).score
            stats[name, side] = np.array(s, dtype="float32")
    for side in ("a", "b"):
        em = pairs[f"em_{side}"].cast(pl.Float32).to_numpy()
        stats["exact_match", side] = em[:, None]
        real["exact_match", side] = float(em.astype(np.float64).mean())
    score = {name: (lambda x, m=m: m._compute_score_from_stats(x).score) for name, m in metrics.items()}
    score["exact_match"] = lambda x: float(x[0]) / len(pairs)
    resampled = _resample(stats, score, len(pairs), samples)
    rows = []
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    for name in score:
        a, b = real[name, "a"], real[name, "b"]
        ra, rb = resampled[name, "a"], resampled[name, "b"]
        diffs = np.abs(rb - ra)
        p = float(((diffs - diffs.mean()) > abs(b - a)).sum() + 1) / (len(diffs) + 1)
        low, high = np.percentile(rb - ra, [lo, hi])
        # an exact tie has nothing to test (sacrebleu would report p = 1 / (samples + 1))
        rows.append(
            (name, a, b, b - a, float(low), float(high), p if a != b else 1.0, name in LOWER_IS_BETTER)
        )
    columns = ["metric", "a", "b", "delta", "delta_low", "delta_high", "p_value", "lower_is_better"]
    return pl.DataFrame(rows, schema=columns, orient="row")


def _segment_stats(metric: Metric, pairs: pl.DataFrame) -> tuple[list, list]:
    """sacrebleu's sufficient statistics of every sentence of A and of B (B's computed only where
    its hypothesis differs from A's: the statistics depend on the hypothesis and reference alone)."""
    refs, hyp_a, hyp_b = (pairs[c].to_list() for c in ("reference", "hyp_a", "hyp_b"))
    stats_a = metric._extract_corpus_statistics(hyp_a, [refs])
    changed = [i for i, (x, y) in enumerate(zip(hyp_a, hyp_b, strict=True)) if x != y]
    stats_b = list(stats_a)
    if changed:
        new = metric._extract_corpus_statistics([hyp_b[i] for i in changed], [[refs[i] for i in changed]])
        for i, s in zip(changed, new, strict=True):
            stats_b[i] = s
    return stats_a, stats_b


def _resample(stats: dict, score: dict, n: int, samples: int) -> dict[tuple[str, str], np.ndarray]:
    """Each (metric, side)'s score on every resample; the resamples are sacrebleu's (one seeded
    ``choice`` of ``samples`` x ``n`` indices, drawn here a chunk of rows at a time)."""
    rng = np.random.default_rng(SEED)
    out: dict[tuple[str, str], list[float]] = {key: [] for key in stats}
    step = max(1, CHUNK_CELLS // max(1, n))
    for start in range(0, samples, step):
        idx = rng.choice(n, size=(min(step, samples - start), n), replace=True)
        for key, s in stats.items():
            out[key] += [score[key[0]](s[row].sum(0)) for row in idx]
    return {key: np.array(v) for key, v in out.items()}


def confusion_changes(wh: Warehouse, run_a: str, run_b: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Confusions at the first divergence that B no longer makes (gone) and that only B makes
    (new): ref_token, hyp_token, n, example_sent_ids, most frequent first."""
    conf = "SELECT ref_token, hyp_token, n, example_sent_ids FROM token_confusions WHERE run_id = ?"
    ca, cb = wh.sql(conf, [run_a]), wh.sql(conf, [run_b])
    keys = ["ref_token", "hyp_token"]
    order = {"by": ["n", *keys], "descending": [True, False, False]}
    return ca.join(cb, on=keys, how="anti").sort(**order), cb.join(ca, on=keys, how="anti").sort(**order)


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    scores: pl.DataFrame  # metric, a, b, delta, delta_low, delta_high, p_value, lower_is_better
    pairs: pl.DataFrame  # sent_id, source, reference, hyp_a, hyp_b, em_a, em_b, outcome
    counts: dict[str, int]  # sentences per outcome
    confusions_gone: pl.DataFrame
    confusions_new: pl.DataFrame

    def sentences(self, outcome: str) -> pl.DataFrame:
        """The pairs of one outcome."""
        return self.pairs.filter(pl.col("outcome") == outcome).drop("em_a", "em_b", "outcome")

    @property
    def fixed(self) -> pl.DataFrame:  # wrong in A, right in B
        return self.sentences("fixed")

    @property
    def broken(self) -> pl.DataFrame:  # right in A, wrong in B
        return self.sentences("broken")


def compare_runs(wh: Warehouse, run_a: str, run_b: str, samples: int = SAMPLES) -> Comparison:
    """Two runs over the same corpus: everything ``Comparison`` holds (PairError when they
    cannot be paired)."""
    a, b = check_pair(wh, run_a, run_b)
    pairs = sentence_pairs(wh, a, b)
    if pairs.height == 0:
        raise PairError(f"runs {a!r} and {b!r} share no sentences with references")
    gone, new = confusion_changes(wh, a, b)
    return Comparison(a, b, paired_scores(pairs, samples), pairs, outcome_counts(pairs), gone, new)


def cached_comparison(wh: Warehouse, run_a: str, run_b: str, samples: int = SAMPLES) -> Comparison:
    """``compare_runs``, remembered while the warehouse's complete runs stay the same."""
    return wh.memo(("compare_runs", run_a, run_b, samples), lambda: compare_runs(wh, run_a, run_b, samples))


def format_comparison(c: Comparison, top: int = 10, samples: int = SAMPLES) -> str:
    """The comparison as text for a terminal."""
    lines = [f"A = {c.run_a}", f"B = {c.run_b}", "", f"scores (paired bootstrap, {samples} resamples):"]
    for m in c.scores.iter_rows(named=True):
        lines.append(
            f"  {m['metric']:<12} A {m['a']:8.3f}  B {m['b']:8.3f}  delta {m['delta']:+8.3f} "
            f"[{m['delta_low']:+.3f}, {m['delta_high']:+.3f}]  p = {m['p_value']:.4f}"
            + ("  (lower is better)" if m["lower_is_better"] else "")
        )
    n = c.counts
    lines += [
        "",
        f"fixed in B: {n['fixed']}   broken in B: {n['broken']}   "
        f"wrong in both: {n['both_wrong']}   right in both: {n['both_right']}",
    ]
    for title, df in (("fixed", c.fixed), ("broken", c.broken)):
        for r in df.head(top).iter_rows(named=True):
            lines.append(
                f"  {title:<6} #{r['sent_id']:<6} ref {r['reference']!r}  A {r['hyp_a']!r}  B {r['hyp_b']!r}"
            )
    for title, df in (("confusions gone in B", c.confusions_gone), ("confusions new in B", c.confusions_new)):
        lines += ["", f"{title}: {df.height}"]
        lines += [
            f"  {r['ref_token']!r} -> {r['hyp_token']!r}  x{r['n']}"
            for r in df.head(top).iter_rows(named=True)
        ]
    return "\n".join(lines)
