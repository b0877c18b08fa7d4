"""Hidden states (goal G2): a sentence's encoder and decoder states, their nearest training
states (searched by the neighbour engine, ``pipeline.neighbours``), and 2-D projections (PCA, UMAP,
t-SNE: ``warehouse.projections``).

Neighbours come from the run's training run, ``runs.neighbours_run`` (decided when the run was
traced): its last-layer encoder states, labelled by source token, and its reference-forced
decoder states, labelled by the reference token that followed.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.neighbours import Bank, open_bank
from schemas import WarehouseError
from schemas.layout import open_vectors, vector_table
from schemas.stages import STAGE_SQL
from warehouse.projections import check_projection, project
from warehouse.store import Warehouse
from warehouse.vectors import fetch

Kind = Literal["encoder", "decoder"]
_TABLE = {"encoder": "encoder_states", "decoder": "decoder_states"}
_POS = {"encoder": "src_pos", "decoder": "step"}
REFINE = 4  # candidates per neighbour taken from the bank, then re-ranked by exact distance


def training_run(wh: Warehouse, run: str) -> str | None:
    """The complete training run whose states are ``run``'s neighbours, if any."""
    return wh.memo(("training_run", run), lambda: _training_run(wh, run))


def _training_run(wh: Warehouse, run: str) -> str | None:
    found = wh.sql("SELECT neighbours_run FROM runs WHERE run_id = ?", [run])
    train = found.item() if found.height else None
    return train if train in wh.run_ids() else None


def bank(wh: Warehouse, train: str, kind: Kind) -> Bank:
    """The neighbour bank of training run ``train`` (kept open per complete run set)."""
    found = wh.memo(("bank", train, kind), lambda: open_bank(wh.root, train, kind))
    if found is None:
        raise WarehouseError(f"training run {train!r} has no {kind} neighbour bank; run `beamscope index`")
    return found


def _vectors(table: pa.Table) -> np.ndarray:
    """[rows, d] float32 vectors of ``table`` (stored float16 or float32; none of them null)."""
    dim = table.schema.field("vector").type.list_size
    flat = table["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, dim)


def hyp_states(rows: pa.Table, steps: pl.DataFrame) -> pa.Table:
    """The hypothesis' decoder states of some sentences, one row per step of ``steps`` (their
    ``target_steps``: sent_id, step, token): its own 'hyp' rows and, at the steps it shares with
    the reference's forced decoding (stored once, as 'ref' rows), the 'ref' row's state and
    input token with the hypothesis' next token. ``rows``: both decodings' rows of the sentences."""
    keys = pl.from_arrow(rows.select(["sent_id", "step", "decoding"])).with_row_index("row")
    own = keys.filter(pl.col("decoding") == "hyp").select("sent_id", "step", own="row")
    ref = keys.filter(pl.col("decoding") == "ref").select("sent_id", "step", ref="row")
    wanted = steps.select(pl.col("sent_id").cast(pl.Int64), pl.col("step").cast(pl.Int32), "token")
    found = (
        wanted.join(own.with_columns(pl.col("step").cast(pl.Int32)), on=["sent_id", "step"], how="left")
        .join(ref.with_columns(pl.col("step").cast(pl.Int32)), on=["sent_id", "step"], how="left")
        .with_columns(row=pl.coalesce("own", "ref"))
        .filter(pl.col("row").is_not_null())
        .sort("sent_id", "step")
    )
    out = rows.take(pa.array(found["row"].to_numpy()))
    out = out.set_column(out.schema.get_field_index("decoding"), "decoding", pa.array(["hyp"] * out.num_rows))
    at = out.schema.get_field_index("next_token")
    return out.set_column(at, "next_token", found["token"].to_arrow().cast(pa.string())).cast(rows.schema)


def sentence_states(wh: Warehouse, run: str, sent_id: int, kind: Kind) -> tuple[pl.DataFrame, np.ndarray]:
    """The sentence's last-layer encoder states (by ``src_pos``) or hypothesis decoder states (by
    ``step``): their key columns and the vectors [n, d] (empty when the run kept no vectors)."""
    return wh.memo(("states", run, sent_id, kind), lambda: _sentence_states(wh, run, sent_id, kind))


def _sentence_states(wh: Warehouse, run: str, sent_id: int, kind: Kind) -> tuple[pl.DataFrame, np.ndarray]:
    tbl = open_vectors(wh.vectors(), vector_table(_TABLE[kind], run))
    if tbl is None:
        return pl.DataFrame(), np.zeros((0, 0), dtype=np.float32)
    rows = fetch(tbl, f"sent_id = {int(sent_id)}")
    if kind == "decoder":
        steps = wh.sql(
            f"SELECT sent_id, step, token FROM {wh.sentence_source('target_steps', run, sent_id)} "
            "WHERE sent_id = ?",
            [sent_id],
        )
        rows = hyp_states(rows, steps)
    if kind == "encoder" and rows.num_rows:
        top = max(rows["layer"].to_pylist())
        rows = rows.filter(pc.equal(rows["layer"], top))
    rows = rows.sort_by(_POS[kind])
    return pl.from_arrow(rows.drop_columns(["vector"])), _vectors(rows)


def nearest_training(
    wh: Warehouse, run: str, sent_id: int, kind: Kind, positions: list[int] | None = None, k: int = 10
) -> pl.DataFrame:
    """The ``k`` nearest training states of the sentence's states at ``positions`` (all if None):
    one row per (query position, rank) with the training sentence, its tokens, the matching
    token's position, the cosine distance and, for decoder states, the token that followed."""
    key = ("nearest", run, sent_id, kind, None if positions is None else tuple(positions), k)
    return wh.memo(key, lambda: _nearest(wh, run, sent_id, kind, positions, k))[0]


def _nearest(
    wh: Warehouse, run: str, sent_id: int, kind: Kind, positions: list[int] | None, k: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """``nearest_training`` and the neighbours' vectors [rows, d] in its row order."""
    train = training_run(wh, run)
    if train is None:
        raise WarehouseError(f"run {run!r} has no traced training run of the same model to search")
    keys, vectors = sentence_states(wh, run, sent_id, kind)
    table = open_vectors(wh.vectors(), vector_table(_TABLE[kind], train))
    if table is None or not len(vectors):
        raise WarehouseError(f"no stored {kind} states for run {train if table is None else run!r}")
    pos_col = _POS[kind]
    all_pos = keys[pos_col].to_list()
    positions = all_pos if positions is None else [p for p in positions if p in all_pos]
    if not positions:
        return pl.DataFrame(), np.zeros((0, vectors.shape[1]), dtype=np.float32)
    query = vectors[[all_pos.index(p) for p in positions]]
    found, found_vectors = _neighbours(wh, train, kind, table, query, k)
    near = found.with_columns(
        position=pl.Series([positions[i] for i in found["query_index"].to_list()], dtype=pl.Int64),
    ).rename({"sent_id": "train_sent_id", pos_col: "train_pos"})
    ids = sorted(set(near["train_sent_id"].to_list()))
    side = "source_tokens" if kind == "encoder" else "reference_steps"
    in_ids = ", ".join(str(int(i)) for i in ids)
    sents, steps = wh.sentence_source("sentences", train), wh.sentence_source(side, train)
    tokens = wh.sql(
        f"SELECT s.sent_id AS train_sent_id, s.source, s.reference, t.tokens FROM {sents} s "
        f"JOIN (SELECT sent_id, list(token ORDER BY {pos_col}) AS tokens FROM {steps} "
        f"WHERE sent_id IN ({in_ids}) GROUP BY sent_id) t USING (sent_id) WHERE s.sent_id IN ({in_ids})"
    )
    near = near.join(tokens, on="train_sent_id", how="left", maintain_order="left")
    near = near.with_row_index("row").with_columns(train_run=pl.lit(train)).sort("position", "rank")
    return near.drop("query_index", "row"), found_vectors[near["row"].to_numpy()]


def _neighbours(
    wh: Warehouse, train: str, kind: Kind, table: Any, query: np.ndarray, k: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """The ``k`` nearest bank states of each query with their stored rows (``REFINE`` * k
    candidates from the bank, re-ranked by exact cosine distance): query_index, sent_id,
    position column, token(s), distance, rank; and the neighbours' vectors in that order."""
    b = bank(wh, train, kind)
    rows, _ = b.search(query, k * REFINE)
    qi, at = np.nonzero(rows >= 0)
    pos_col = _POS[kind]
    keys = pl.DataFrame({"query_index": qi, "sent_id": b.sent_id[rows[qi, at]], pos_col: b.pos[rows[qi, at]]})
    ids = ", ".join(str(int(i)) for i in sorted(set(keys["sent_id"].to_list())) or [-1])
    layer = "decoding = 'ref'" if kind == "decoder" else f"layer = {_top_layer(wh, train, table)}"
    columns = ["sent_id", pos_col, "token"] + (["next_token"] if kind == "decoder" else [])
    stored = fetch(table, f"sent_id IN ({ids}) AND {layer}", [*columns, "vector"])
    frame = pl.from_arrow(stored.drop_columns(["vector"])).with_row_index("vrow")
    found = keys.join(frame, on=["sent_id", pos_col], how="inner", maintain_order="left")
    vectors = _vectors(stored)[found["vrow"].to_numpy()].astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    distance = 1 - (unit * q[found["query_index"].to_numpy()]).sum(1)
    found = found.with_columns(distance=pl.Series(distance.astype(np.float32))).with_row_index("at")
    found = found.sort("query_index", "distance").with_columns(
        rank=pl.int_range(pl.len()).over("query_index") + 1
    )
    found = found.filter(pl.col("rank") <= k)
    return found.drop("vrow", "at"), vectors[found["at"].to_numpy()]


def bank_description(wh: Warehouse, run: str, kind: Kind) -> str:
    """What ``run``'s neighbours of ``kind`` are searched in (shown beside them)."""
    train = training_run(wh, run)
    return "no training run" if train is None else bank(wh, train, kind).info.describe()


def _top_layer(wh: Warehouse, run: str, table: Any) -> int:
    """The last encoder layer stored for ``run`` (runs traced with --all-layers keep them all)."""
    return wh.memo(("top_layer", run), lambda: int(pc.max(fetch(table, "true", ["layer"])["layer"]).as_py()))


def trajectory(wh: Warehouse, run: str, sent_id: int, k: int = 5, projection: str = "pca") -> pl.DataFrame:
    """The sentence's encoder and decoder states and each one's ``k`` nearest training states,
    projected together (``projection``: pca, umap or tsne, fitted on the whole point set): columns
    group ('encoder', 'decoder', 'encoder neighbour', 'decoder neighbour'), position, token, x, y,
    train_run, train_sent_id (neighbours only)."""
    projection = check_projection(projection)
    key = ("trajectory", run, sent_id, k, projection)
    return wh.memo(key, lambda: _trajectory(wh, run, sent_id, k, projection))


def _trajectory(wh: Warehouse, run: str, sent_id: int, k: int, projection: str) -> pl.DataFrame:
    frames, blocks = [], []
    train = training_run(wh, run)
    has_training = train is not None and all(
        open_vectors(wh.vectors(), vector_table(t, train)) is not None for t in _TABLE.values()
    )
    for kind in ("encoder", "decoder"):
        keys, vectors = sentence_states(wh, run, sent_id, kind)
        if not len(vectors):
            continue
        own = keys.select(
            pl.lit(kind).alias("group"),
            pl.col(_POS[kind]).cast(pl.Int64).alias("position"),
            pl.col("token" if kind == "encoder" else "next_token").alias("token"),
            pl.lit(None, pl.String).alias("train_run"),
            pl.lit(None, pl.Int64).alias("train_sent_id"),
        )
        frames.append(own)
        blocks.append(vectors)
        if has_training:
            near, near_vectors = _nearest(wh, run, sent_id, kind, None, k)
            frames.append(
                near.select(
                    pl.lit(f"{kind} neighbour").alias("group"),
                    "position",
                    pl.col("next_token" if kind == "decoder" else "token").alias("token"),
                    "train_run",
                    pl.col("train_sent_id").cast(pl.Int64),
                )
            )
            blocks.append(near_vectors)
    if not blocks:
        return pl.DataFrame()
    xy = project(np.concatenate(blocks), projection)
    return pl.concat(frames).with_columns(x=pl.Series(xy[:, 0]), y=pl.Series(xy[:, 1]))


# sentences on the corpus map: fewer for UMAP and t-SNE (~3,300 states of the demo's test run:
# 2.6 s and 4.9 s, where 6,600 would take about twice as long)
MAP_SENTENCES = {"pca": 600, "umap": 300, "tsne": 300}


def corpus_map(
    wh: Warehouse, run: str, max_sentences: int | None = None, projection: str = "pca"
) -> pl.DataFrame:
    """Hypothesis decoder states of a sample of the run's sentences (every wrong one first, then
    a fixed pseudo-random sample of the rest; ``MAP_SENTENCES`` by default), projected with
    ``projection`` (pca, umap or tsne): sent_id, step, token, stage, x, y."""
    projection = check_projection(projection)
    n = max_sentences or MAP_SENTENCES[projection]
    return wh.memo(("corpus_map", run, n, projection), lambda: _corpus_map(wh, run, n, projection))


def _corpus_map(wh: Warehouse, run: str, max_sentences: int, projection: str) -> pl.DataFrame:
    tbl = open_vectors(wh.vectors(), vector_table("decoder_states", run))
    if tbl is None:
        return pl.DataFrame()
    sample = wh.sql(
        f"SELECT sent_id, {STAGE_SQL} AS stage FROM sentences WHERE run_id = ? "
        "ORDER BY (reference IS NOT NULL AND NOT exact_match) DESC, hash(sent_id) LIMIT ?",
        [run, max_sentences],
    )
    if sample.height == 0:
        return pl.DataFrame()
    ids = ", ".join(str(i) for i in sample["sent_id"].to_list())
    steps = wh.sql(
        f"SELECT sent_id, step, token FROM target_steps WHERE run_id = ? AND sent_id IN ({ids})", [run]
    )
    rows = hyp_states(fetch(tbl, f"sent_id IN ({ids})"), steps)
    if not rows.num_rows:
        return pl.DataFrame()
    xy = project(_vectors(rows), projection)
    states = pl.from_arrow(rows.select(["sent_id", "step", "next_token"])).rename({"next_token": "token"})
    xy = np.round(xy, 4)  # plenty for a scatter plot; keeps the figure small
    return states.with_columns(x=pl.Series(xy[:, 0]), y=pl.Series(xy[:, 1])).join(sample, on="sent_id")
