"""Marts: keys, value ranges, and counts checked against independent polars computations."""

import polars as pl
import pytest

from schemas.buckets import SOURCE_LENGTH, TOKEN_FREQUENCY
from schemas.stages import SENTENCE_STAGES
from tests.helpers import run_cli
from warehouse import open_warehouse
from warehouse.marts import MARTS
from warehouse.report import error_report, format_breakdown

KEYS = {
    "sentence_errors": ["run_id", "sent_id"],
    "error_summary": ["run_id", "kind", "name"],
    "token_confusions": ["run_id", "ref_token", "hyp_token"],
    "bucket_accuracy": ["run_id", "bucketing", "bucket"],
    "attention_coverage": ["run_id", "sent_id"],
    "sentence_buckets": ["run_id", "sent_id", "bucketing", "bucket"],
    "attention_attribution": ["run_id", "sent_id", "step"],
    "attention_attribution_summary": ["run_id", "grouping", "group"],
}
STAGES = set(SENTENCE_STAGES)


@pytest.fixture(scope="module")
def wh(warehouse_dir):
    with open_warehouse(warehouse_dir) as w:
        yield w


@pytest.fixture(scope="module")
def sentences(warehouse_dir) -> pl.DataFrame:
    """The sentences straight from Parquet, without DuckDB or beamscope's views."""
    return pl.read_parquet(warehouse_dir / "tables/sentences/*/*.parquet")


@pytest.mark.parametrize("mart", list(MARTS))
def test_keys_unique_and_not_null(wh, mart) -> None:
    df = wh.mart(mart)
    assert df.height > 0
    assert df.select(KEYS[mart]).is_duplicated().sum() == 0
    assert df.select(KEYS[mart]).null_count().sum_horizontal().item() == 0


def test_stages_are_the_documented_ones(wh) -> None:
    assert set(wh.mart("sentence_errors")["stage"].unique()) <= STAGES


def test_error_summary_equals_an_independent_count(wh, sentences) -> None:
    summary = wh.mart("error_summary")
    wrong = sentences.filter(pl.col("reference").is_not_null() & ~pl.col("exact_match"))
    expected = wrong.group_by("run_id", "blamed_stage").len().rename({"blamed_stage": "name", "len": "n"})
    correct = sentences.filter(pl.col("exact_match")).group_by("run_id").len()
    expected = pl.concat(
        [
            expected,
            correct.with_columns(name=pl.lit("correct")).rename({"len": "n"}).select("run_id", "name", "n"),
        ]
    )
    got = summary.filter(pl.col("kind") == "stage").select("run_id", "name", "n")
    assert got.sort("run_id", "name").equals(expected.sort("run_id", "name").cast({"n": pl.Int64}))
    tags = wrong.explode("error_tags").group_by("run_id", "error_tags").len()
    got_tags = summary.filter(pl.col("kind") == "tag").select("run_id", "name", "n")
    assert got_tags.sort("run_id", "name").equals(
        tags.rename({"error_tags": "name", "len": "n"}).sort("run_id", "name").cast({"n": pl.Int64})
    )
    shares = summary["share_of_sentences"]
    assert ((shares >= 0) & (shares <= 1)).all()
    stage_share = summary.filter((pl.col("kind") == "stage") & (pl.col("name") != "correct"))
    assert (
        stage_share.group_by("run_id")
        .agg(pl.col("share_of_errors").sum())["share_of_errors"]
        .is_between(0.999, 1.001)
        .all()
    )


def test_token_confusions_count_every_wrong_sentence_once(wh, sentences) -> None:
    conf = wh.mart("token_confusions")
    wrong = sentences.filter(~pl.col("exact_match")).group_by("run_id").len()
    per_run = conf.group_by("run_id").agg(pl.col("n").sum())
    assert dict(per_run.iter_rows()) == dict(wrong.iter_rows())
    assert (conf["ref_token"] != conf["hyp_token"]).all()
    assert all(1 <= len(ids) <= 5 for ids in conf["example_sent_ids"])


def test_bucket_accuracy_is_a_partition_with_sane_rates(wh, warehouse_dir) -> None:
    buckets = wh.mart("bucket_accuracy")
    ref = pl.read_parquet(warehouse_dir / "tables/reference_steps/*/*.parquet").filter(
        pl.col("token") != "</s>"
    )
    expected = dict(ref.group_by("run_id").len().iter_rows())
    for bucketing in ("ref_token_frequency", "source_length"):
        got = (
            buckets.filter(pl.col("bucketing") == bucketing)
            .group_by("run_id")
            .agg(pl.col("ref_tokens").sum())
        )
        assert dict(got.iter_rows()) == expected
    for col in ("precision", "recall", "f_measure"):
        assert buckets[col].drop_nulls().is_between(0, 1).all()
    lengths = buckets.filter(pl.col("bucketing") == "source_length")
    assert lengths["exact_match"].is_between(0, 1).all()


def test_attention_coverage(wh, warehouse_dir) -> None:
    cov = wh.mart("attention_coverage")
    src = pl.read_parquet(warehouse_dir / "tables/source_tokens/*/*.parquet")
    under = src.group_by("run_id", "sent_id").agg((pl.col("attention_received") < 0.3).sum().alias("u"))
    joined = cov.join(under, on=["run_id", "sent_id"])
    assert joined.height == cov.height == src.select("run_id", "sent_id").unique().height
    assert (joined["under_covered"] == joined["u"]).all()
    assert cov["coverage"].is_between(0, 1).all()


def test_errors_report_text_and_json(warehouse_dir) -> None:
    text = run_cli("errors", "--warehouse", str(warehouse_dir), "--run", "beam4")
    assert text.returncode == 0, text.stderr
    for heading in ("stage breakdown:", "top confusions", "worst sentences:", "token accuracy by bucket"):
        assert heading in text.stdout
    js = run_cli("errors", "--warehouse", str(warehouse_dir), "--run", "beam4", "--format", "json")
    import json

    data = json.loads(js.stdout)
    assert data["run"]["run_id"] == "beam4"
    assert sum(s["n"] for s in data["stages"]) == 48


def test_compare_runs(warehouse_dir, tmp_path) -> None:
    out = run_cli("compare", "--warehouse", str(warehouse_dir), "greedy", "beam4", "--samples", "200")
    assert out.returncode == 0, out.stderr
    assert "BLEU" in out.stdout and "exact_match" in out.stdout and "fixed in B:" in out.stdout


def test_compare_refuses_different_corpora(tiny_dir, tmp_path) -> None:
    from pipeline.beam import DecodeConfig
    from pipeline.trace import TraceConfig, trace

    for name, corpus in (("a", "task:dates:test:5"), ("b", "task:dates:test:6")):
        trace(
            TraceConfig(
                model=str(tiny_dir),
                corpus=corpus,
                warehouse=str(tmp_path),
                run_name=name,
                decoding=DecodeConfig(beam=2, max_len=12),
                device="cpu",
            ),
            progress=False,
        )
    out = run_cli("compare", "--warehouse", str(tmp_path), "a", "b")
    assert out.returncode != 0 and "different corpora" in out.stderr


def _length_bucket(n: int) -> str:
    return SOURCE_LENGTH.label(n)


def _freq_bucket(f: int | None) -> str:
    return "0" if f is None else TOKEN_FREQUENCY.label(f)


def _bucket_accuracy_by_hand(root, run: str, train_run: str) -> pl.DataFrame:
    """compare-mt's bucketed token accuracy, computed with polars from the Parquet files."""

    def tokens(table: str) -> pl.DataFrame:
        steps = pl.read_parquet(root / f"tables/{table}/run={run}/*.parquet")
        return steps.filter(pl.col("token") != "</s>")

    sents = pl.read_parquet(root / f"tables/sentences/run={run}/*.parquet").filter(
        pl.col("reference").is_not_null()
    )
    sents = sents.with_columns(bucket=pl.col("src_len").map_elements(_length_bucket, return_dtype=pl.String))
    ref = tokens("reference_steps").group_by("sent_id", "token").len("n_ref")
    hyp = tokens("target_steps").group_by("sent_id", "token").len("n_hyp")
    counts = (
        ref.join(hyp, on=["sent_id", "token"], how="full", coalesce=True)
        .fill_null(0)
        .join(sents.select("sent_id", "bucket"), on="sent_id")
        .with_columns(matched=pl.min_horizontal("n_ref", "n_hyp"))
    )
    freq = (
        pl.read_parquet(root / f"tables/reference_steps/run={train_run}/*.parquet").group_by("token").len("f")
    )
    by_freq = counts.drop("bucket").join(freq, on="token", how="left")
    by_freq = by_freq.with_columns(bucket=pl.col("f").map_elements(_freq_bucket, return_dtype=pl.String))
    by_freq = by_freq.with_columns(bucket=pl.col("bucket").fill_null("0"))
    sums = [pl.sum("n_ref").alias("ref_tokens"), pl.sum("n_hyp").alias("hyp_tokens"), pl.sum("matched")]
    lengths = sents.group_by("bucket").agg(
        pl.len().alias("sentences"), pl.col("exact_match").cast(pl.Float64).mean()
    )
    by_len = counts.group_by("bucket").agg(sums).join(lengths, on="bucket", how="full", coalesce=True)
    return pl.concat(
        [
            by_freq.group_by("bucket").agg(sums).with_columns(bucketing=pl.lit("ref_token_frequency")),
            by_len.with_columns(bucketing=pl.lit("source_length")),
        ],
        how="diagonal",
    )


def test_bucket_accuracy_equals_a_polars_computation(train_warehouse_dir) -> None:
    with open_warehouse(train_warehouse_dir) as wh:
        got = wh.mart("bucket_accuracy", "test")
        assert wh.sql("SELECT neighbours_run FROM runs WHERE run_id = 'test'").item() == "train"
        view = wh.sql("SELECT * FROM bucket_accuracy WHERE run_id = 'test'")  # the view over every run
    expected = _bucket_accuracy_by_hand(train_warehouse_dir, "test", "train")
    assert expected.filter(pl.col("bucketing") == "ref_token_frequency").height >= 2
    assert (expected["matched"] < expected["ref_tokens"]).any()  # the test run makes errors
    cols = ["bucketing", "bucket", "ref_tokens", "hyp_tokens", "matched", "sentences", "exact_match"]
    ints = {c: pl.Int64 for c in ("ref_tokens", "hyp_tokens", "matched", "sentences")}
    for df in (got, view):
        assert (
            df.select(cols)
            .cast(ints)
            .sort("bucketing", "bucket")
            .equals(expected.select(cols).cast(ints).sort("bucketing", "bucket"))
        )


@pytest.mark.parametrize(("which", "column", "top"), [("_FREQ", "f", 20000), ("_LEN", "src_len", 100)])
def test_each_bucket_has_one_sort_order(which, column, top) -> None:
    """A bucket whose order changed inside it would come out as two rows of the same key."""
    import duckdb

    import warehouse.marts as marts

    label, order = (sql.replace("f.f", column) for sql in getattr(marts, which))
    rows = duckdb.sql(
        f"SELECT {label} AS b, min({order}) AS lo, max({order}) AS hi, min({column}) AS first "
        f"FROM (SELECT range AS {column} FROM range(1, {top})) GROUP BY b ORDER BY first"
    ).fetchall()
    assert all(lo == hi for _, lo, hi, _ in rows)
    assert [lo for _, lo, _, _ in rows] == sorted(lo for _, lo, _, _ in rows)  # ordered as the values


def test_train_warehouse_mart_keys(train_warehouse_dir) -> None:
    with open_warehouse(train_warehouse_dir) as wh:
        for mart, keys in KEYS.items():
            df = wh.mart(mart)
            assert df.select(keys).is_duplicated().sum() == 0, mart


@pytest.mark.parametrize("fixture", ["warehouse_dir", "train_warehouse_dir"])
def test_sentence_buckets_sum_to_bucket_accuracy(fixture, request) -> None:
    with open_warehouse(request.getfixturevalue(fixture)) as wh:
        for run in wh.run_ids():
            per = wh.mart("sentence_buckets", run)
            summed = per.group_by("bucketing", "bucket").agg(
                pl.col("ref_tokens", "hyp_tokens", "matched").sum(), pl.col("exact_match").mean()
            )
            mart = wh.mart("bucket_accuracy", run).select(
                "bucketing", "bucket", "ref_tokens", "hyp_tokens", "matched", "exact_match"
            )
            joined = mart.join(summed, on=["bucketing", "bucket"], how="full", coalesce=True)
            assert joined.height == mart.height == summed.height, run
            for c in ("ref_tokens", "hyp_tokens", "matched"):
                assert (joined[c] == joined[f"{c}_right"]).all(), (run, c)
            em = joined.filter(pl.col("exact_match").is_not_null())
            assert ((em["exact_match"] - em["exact_match_right"]).abs() < 1e-12).all(), run


def test_bucket_intervals_are_seeded_and_hold_the_rate(train_warehouse_dir) -> None:
    from warehouse.intervals import _intervals

    with open_warehouse(train_warehouse_dir) as wh:
        per = wh.mart("sentence_buckets", "test")
        rates = wh.mart("bucket_accuracy", "test")
    wide = _intervals(per, 400, 0.95, seed=1)
    assert wide.equals(_intervals(per, 400, 0.95, seed=1))  # seeded
    assert not wide.equals(_intervals(per, 400, 0.95, seed=2))
    narrow = _intervals(per, 400, 0.5, seed=1)
    both = rates.join(wide, on=["bucketing", "bucket"]).join(narrow, on=["bucketing", "bucket"], suffix="_50")
    assert both.height == rates.height
    for b in both.iter_rows(named=True):
        assert b["f_low"] - 1e-9 <= b["f_measure"] <= b["f_high"] + 1e-9, b
        assert b["f_low"] <= b["f_low_50"] <= b["f_high_50"] <= b["f_high"], b
        if b["exact_match"] is not None:
            assert b["exact_low"] - 1e-9 <= b["exact_match"] <= b["exact_high"] + 1e-9, b
    assert (both["f_high"] - both["f_low"]).max() > 0  # the tiny model errs: the intervals have width


def test_breakdown_table_shows_each_runs_counts(wh, sentences) -> None:
    runs = wh.run_ids()
    text = format_breakdown([error_report(wh, run) for run in runs]).splitlines()
    assert text[0].split() == runs
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in text[2:]}
    wrong = sentences.filter(pl.col("reference").is_not_null() & ~pl.col("exact_match"))
    for i, run in enumerate(runs):
        of_run = wrong.filter(pl.col("run_id") == run)
        for stage, n in of_run.group_by("blamed_stage").len().iter_rows():
            assert int(rows[f"stage {stage}"][i]) == n
        for tag, n in (
            of_run.explode("error_tags").drop_nulls("error_tags").group_by("error_tags").len().iter_rows()
        ):
            assert int(rows[f"tag {tag}"][i]) == n
        assert (
            sum(int(v[i]) for k, v in rows.items() if k.startswith("stage ") and k != "stage correct")
            == of_run.height
        )
