"""Where in decoder-state space the model fails: k-means clusters of a run's decoder states,
ranked by error rate (tables ``state_clusters`` and ``state_cluster_members``).

One state per sentence with a reference: a wrong sentence's state at its first divergence step
(the state that produced the wrong token), a correct sentence's state at a seeded random step of
its hypothesis. So a cluster's error rate is the share of its sentences that are wrong, directly
comparable with the run's. Above ``max_states`` sentences a seeded uniform sample is clustered
(rates stay unbiased). States are L2-normalised first (the neighbour engine's cosine). Clusters are
numbered by rank: error rate, then wrong sentences, then size (descending), then the smallest
(sent_id, step) of a member; so the same states give the same tables, whatever k-means' labels.

Computed when a run completes, just before it is published (``pipeline.trace``, both engines;
what-if runs), and by ``beamscope migrate`` for the runs of older warehouses; written through
``RunWriter.write_run_tables``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.writer.run import RunWriter
from schemas import TABLES

CLUSTER_TABLES = ("state_clusters", "state_cluster_members")
ENDED = "(ended)"  # the produced token where the hypothesis had ended (as token_confusions says)


@dataclass(frozen=True)
class ClusterConfig:
    """How a run's states are clustered (fixed per beamscope version; see the module doc)."""

    seed: int = 0
    max_states: int = 20_000  # sentences clustered at most (a seeded sample above it)
    max_k: int = 16
    min_states: int = 8  # fewer states: no clusters
    n_init: int = 4
    top: int = 3  # tokens listed per cluster
    examples: int = 5  # example sentence ids per cluster

    def k(self, n: int) -> int:
        """Clusters for ``n`` states: about sqrt(n / 4), 2 to ``max_k``."""
        return min(self.max_k, max(2, round(math.sqrt(n / 4))), n)


def choose_states(sentences: pl.DataFrame, cfg: ClusterConfig = ClusterConfig()) -> pl.DataFrame:
    """The (sent_id, step, is_wrong) to cluster, from ``sentences`` (sent_id, reference,
    exact_match, first_divergence_step, ref_len): see the module doc."""
    s = sentences.filter(pl.col("reference").is_not_null() & (pl.col("ref_len") > 0)).sort("sent_id")
    rng = np.random.default_rng(cfg.seed)
    if s.height > cfg.max_states:
        s = s[np.sort(rng.choice(s.height, cfg.max_states, replace=False))]
    wrong = ~s["exact_match"].fill_null(False)
    random_step = np.floor(rng.random(s.height) * s["ref_len"].to_numpy()).astype(np.int32)
    divergence = s["first_divergence_step"].fill_null(0).to_numpy()
    step = np.where(wrong.to_numpy(), divergence, random_step).astype(np.int32)
    return pl.DataFrame({"sent_id": s["sent_id"], "step": step, "is_wrong": wrong})


def kmeans_labels(vectors: np.ndarray, cfg: ClusterConfig = ClusterConfig()) -> np.ndarray:
    """k-means labels of the L2-normalised ``vectors`` [n, d] (seeded)."""
    from sklearn.cluster import KMeans  # only when a run completes: a second's import
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    # one thread: the same labels on any machine, and no OpenMP spinning beside other work
    with warnings.catch_warnings(), threadpool_limits(1):  # fewer distinct states than k: warned
        warnings.simplefilter("ignore")
        model = KMeans(cfg.k(len(x)), n_init=cfg.n_init, random_state=cfg.seed)
        return model.fit_predict(x)


def rank_clusters(
    run_id: str, members: pl.DataFrame, labels: np.ndarray, cfg: ClusterConfig = ClusterConfig()
) -> dict[str, pa.Table]:
    """Both tables from the clustered ``members`` (sent_id, step, is_wrong, produced, reference)
    and their k-means ``labels``: clusters numbered by rank (see the module doc)."""
    m = members.with_columns(label=pl.Series(labels, dtype=pl.Int64)).sort("sent_id", "step")
    stats = m.group_by("label").agg(
        n_states=pl.len(),
        n_wrong=pl.col("is_wrong").sum(),
        first_sent=pl.col("sent_id").first(),  # the smallest (sent_id, step): m is sorted
        first_step=pl.col("step").first(),
    )
    stats = stats.with_columns(rate=pl.col("n_wrong") / pl.col("n_states")).sort(
        ["rate", "n_wrong", "n_states", "first_sent", "first_step"],
        descending=[True, True, True, False, False],
    )
    stats = stats.with_columns(cluster=pl.int_range(1, pl.len() + 1, dtype=pl.Int32))
    m = m.join(stats.select("label", "cluster"), on="label").sort("sent_id", "step")
    rows = [
        {
            "run_id": run_id,
            "cluster": c,
            "n_states": n,
            "n_wrong": w,
            "error_rate": w / n,
            **_tops(m.filter(pl.col("cluster") == c), cfg),
        }
        for c, n, w in stats.select("cluster", "n_states", "n_wrong").iter_rows()
    ]
    member_rows = m.select(pl.lit(run_id).alias("run_id"), "sent_id", "step", "cluster", "is_wrong",
                           "produced", "reference")  # fmt: skip
    return {
        "state_clusters": pa.Table.from_pylist(rows, schema=TABLES["state_clusters"]),
        "state_cluster_members": member_rows.to_arrow().cast(TABLES["state_cluster_members"]),
    }


def _tops(m: pl.DataFrame, cfg: ClusterConfig) -> dict[str, list]:
    """A cluster's most frequent produced and reference tokens, and example sentences."""

    def top(col: str) -> list[str]:
        counts = m.group_by(col).len().sort(["len", col], descending=[True, False])
        return counts[col].head(cfg.top).to_list()

    examples = m.sort(["is_wrong", "sent_id"], descending=[True, False])["sent_id"].head(cfg.examples)
    return {"top_produced": top("produced"), "top_reference": top("reference"),
            "example_sent_ids": examples.to_list()}  # fmt: skip


def empty_tables() -> dict[str, pa.Table]:
    return {t: TABLES[t].empty_table() for t in CLUSTER_TABLES}


def run_clusters(writer: RunWriter, cfg: ClusterConfig = ClusterConfig()) -> dict[str, pa.Table]:
    """Both tables for the run ``writer`` writes (or wrote), from its parts and its decoder
    states (empty when it kept no vectors or has fewer than ``min_states`` sentences with a
    reference)."""
    cols = ["sent_id", "reference", "exact_match", "first_divergence_step", "ref_len"]
    chosen = choose_states(pl.from_arrow(writer.read_table("sentences", cols)), cfg)
    if chosen.height < cfg.min_states:
        return empty_tables()
    vectors = _state_vectors(writer, chosen)
    if vectors is None:
        return empty_tables()
    keys, x = vectors
    tokens = _tokens(writer)
    members = keys.join(tokens, on=["sent_id", "step"], how="left", maintain_order="left").with_columns(
        pl.col("produced").fill_null(ENDED), pl.col("reference").fill_null(ENDED)
    )
    if members.height < cfg.min_states:
        return empty_tables()
    return rank_clusters(writer.run_id, members, kmeans_labels(x, cfg), cfg)


def _state_vectors(writer: RunWriter, chosen: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray] | None:
    """The chosen states' vectors: their 'ref' rows (up to the divergence step the hypothesis'
    states are the reference-forced ones, stored once), read a range of sentences at a time."""
    ids = chosen["sent_id"].to_numpy()
    keys, blocks = [], []
    for lo in range(0, len(ids), 2048):
        first, last = int(ids[lo]), int(ids[min(lo + 2048, len(ids)) - 1])
        where = f"decoding = 'ref' AND sent_id >= {first} AND sent_id <= {last}"
        rows = writer.read_vectors("decoder_states", where, ["sent_id", "step", "vector"])
        if rows is None:
            return None
        frame = pl.from_arrow(rows.select(["sent_id", "step"])).with_row_index("row")
        found = chosen.join(frame, on=["sent_id", "step"], how="inner").sort("sent_id")
        dim = rows.schema.field("vector").type.list_size
        flat = rows["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        blocks.append(flat.reshape(-1, dim)[found["row"].to_numpy()].astype(np.float32))
        keys.append(found.drop("row"))
    return pl.concat(keys), np.concatenate(blocks)


def _tokens(writer: RunWriter) -> pl.DataFrame:
    """sent_id, step, produced (the hypothesis' token), reference (the reference's token)."""
    hyp = pl.from_arrow(writer.read_table("target_steps", ["sent_id", "step", "token"]))
    ref = pl.from_arrow(writer.read_table("reference_steps", ["sent_id", "step", "token"]))
    return ref.rename({"token": "reference"}).join(
        hyp.rename({"token": "produced"}), on=["sent_id", "step"], how="left"
    )
