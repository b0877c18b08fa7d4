"""The neighbour engine: every "which training states look like this state?" goes through here.

The trace's agreement columns, the blame rules, what-if re-decoding and the dashboard's
neighbour table and trajectory all search a ``Bank``: an in-process faiss index over one
training run's states of one kind, built from LanceDB (the store of the states) in batches and
kept beside the vectors, so no query path loads a training run's float32 states:

- ``encoder``: the last encoder layer's states, labelled by their source token;
- ``decoder``: the reference-forced decoder states, labelled by the reference token that followed
  and, for the attention rule, by the source token their step attended most (``attended``).

Banks of at most ``EXACT_MAX`` states are exact (inner product of unit vectors = cosine); larger
ones are an IVF index (4 * sqrt(states) lists, ``NPROBE`` searched) over float16 vectors. 8-bit
scalar quantisation (half the memory) kept agreement within 0.1 but changed the blamed stage of
2 of 48 wrong fixture sentences (agreement near the 0.5 threshold); float16 changed none
(tests/pipeline/test_neighbours.py; figures in the README's "Neighbours at scale"). A bank may keep a seeded
uniform sample of at most ``max_states`` states (Seq2Seq-Vis kept ~2.5 M per type for WMT).

Which training run serves a run is decided once, by ``resolve_training_run`` when the run is
traced, and recorded in ``runs.neighbours_run``; every reader takes it from there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import faiss
import lancedb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.writer.indexes import save_bank
from schemas import WarehouseError
from schemas.layout import (
    MANIFEST,
    banks_dir,
    connect_vectors,
    is_remote,
    open_vectors,
    read_manifest,
    vector_table,
)

Kind = Literal["encoder", "decoder"]
KINDS: tuple[Kind, ...] = ("encoder", "decoder")
EXACT_MAX = 10_000  # states; up to this a bank is an exact flat index (a query costs states x dim)
NPROBE = 16  # IVF lists searched per query (bench.bank: agreement equals exact search at 8 already)
TRAIN_PER_LIST = 40  # vectors the IVF quantiser is trained on, per list (faiss asks for >= 39)
BATCH = 64 * 1024  # rows read from LanceDB at a time
MMAP = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)  # how stored indexes are opened
NO_LABEL, PADDING = -1, -2  # label codes of an unknown query label and of a missing neighbour
_SOURCE = {  # the LanceDB table, filter (None: the last layer) and label column of each kind
    "encoder": ("encoder_states", None, "token", "src_pos"),
    "decoder": ("decoder_states", "decoding = 'ref'", "next_token", "step"),
}


@dataclass(frozen=True)
class BankInfo:
    """What a bank holds (stored as ``<kind>.json``; shown wherever neighbours are shown)."""

    run_id: str
    kind: str
    index: str  # faiss factory string
    states: int  # states kept in the bank
    total: int  # states of that kind in the training run
    max_states: int | None  # the cap asked for (None: every state)
    seed: int
    dim: int
    build_seconds: float
    files: tuple[str, str]  # index file, row file (names inside the bank directory)

    @property
    def sampled(self) -> bool:
        return self.states < self.total

    def describe(self) -> str:
        kept = f"{self.states:,} states" + (f" (seeded sample of {self.total:,})" if self.sampled else "")
        return f"{self.kind} bank of run {self.run_id}: {kept}, {self.index}"


@dataclass
class Bank:
    """One training run's states of one kind, searchable; rows carry (sent_id, pos, label)."""

    info: BankInfo
    index: faiss.Index
    sent_id: np.ndarray  # [n] int64
    pos: np.ndarray  # [n] int32: src_pos (encoder) or step (decoder)
    labels: np.ndarray  # [n] int32 codes into ``vocab``
    vocab: dict[str, int]
    attended: np.ndarray | None = None  # decoder: [n] codes of the source token its step attended most
    attended_vocab: dict[str, int] | None = None  # the codes of ``attended``

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers [n, k] (-1 past the bank's size) and cosine distances of the ``k``
        nearest states of each query, nearest first."""
        q = np.array(np.atleast_2d(queries), dtype=np.float32, order="C")  # a copy: normalised in place
        if q.shape[1] != self.info.dim:
            raise WarehouseError(f"query states have {q.shape[1]} dimensions, the bank {self.info.dim}")
        faiss.normalize_L2(q)
        if not len(q):
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        sims, rows = self.index.search(q, k)
        return rows, (1 - sims).astype(np.float32)

    def codes(self, tokens: np.ndarray, attended: bool = False) -> np.ndarray:
        """Label codes (or ``attended`` codes) of ``tokens`` (``NO_LABEL`` for one the bank never saw)."""
        vocab = (self.attended_vocab or {}) if attended else self.vocab
        return np.fromiter((vocab.get(t, NO_LABEL) for t in tokens), dtype=np.int32, count=len(tokens))

    def neighbour_rows(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[n, min(k, states)] bank rows of each query's nearest states (-1 if missing)."""
        return self.search(queries, min(k, self.info.states))[0]

    def rows_labels(self, rows: np.ndarray, attended: bool = False) -> np.ndarray:
        """The label codes (or ``attended`` codes) of bank ``rows`` (``PADDING`` for -1)."""
        labels = self.attended if attended else self.labels
        if labels is None:
            raise WarehouseError(
                f"the {self.info.kind} bank of run {self.info.run_id} has no attended tokens"
            )
        return np.where(rows >= 0, labels[np.maximum(rows, 0)], PADDING)

    def neighbour_labels(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[n, min(k, states)] label codes of each query's nearest states (``PADDING`` if missing)."""
        return self.rows_labels(self.neighbour_rows(queries, k))


def _label_codes(tokens: list[str], vocab: dict[str, int]) -> np.ndarray:
    return np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), dtype=np.int32, count=len(tokens))


def _batches(root: Path, run_id: str, kind: Kind) -> tuple[lancedb.table.Table, str, int]:
    """The LanceDB table of ``kind`` states of ``run_id``, the filter selecting them, their count."""
    name, where, _, _ = _SOURCE[kind]
    tbl = open_vectors(connect_vectors(root), vector_table(name, run_id))
    if tbl is None:
        raise WarehouseError(f"run {run_id!r} has no stored {kind} states (traced with --no-vectors?)")
    if where is None:
        layers = tbl.search().select(["layer"]).limit(None).to_arrow()["layer"]
        where = f"layer = {max(layers.to_pylist(), default=0)}"
    return tbl, where, tbl.count_rows(where)


def _read(tbl: lancedb.table.Table, where: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    yield from tbl.search().where(where).select(columns).limit(None).to_batches(BATCH)


def _vectors(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    col = batch.column("vector")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = col.flatten().to_numpy(zero_copy_only=False)
    out = np.ascontiguousarray(flat.reshape(-1, col.type.list_size), dtype=np.float32)
    faiss.normalize_L2(out)
    return out


def _sample_mask(total: int, keep: int, seed: int) -> np.ndarray:
    """A seeded uniform choice of ``keep`` of ``total`` rows, as a boolean mask in row order."""
    mask = np.zeros(total, dtype=bool)
    mask[np.random.default_rng(seed).choice(total, keep, replace=False)] = True
    return mask


def factory_string(states: int) -> str:
    """The faiss index of a bank of ``states`` states (see the module doc)."""
    return "Flat" if states <= EXACT_MAX else f"IVF{max(64, 4 * int(math.sqrt(states)))},SQfp16"


def build_bank(
    root: Path,
    run_id: str,
    kind: Kind,
    max_states: int | None = None,
    seed: int = 0,
    index: str | None = None,
) -> BankInfo:
    """Build (or rebuild) the ``kind`` bank of training run ``run_id`` from its LanceDB states;
    ``index``: a faiss factory string instead of ``factory_string``'s choice (e.g. 'Flat')."""
    if max_states is not None and max_states < 1:
        raise WarehouseError(f"--bank-size must be at least 1 (got {max_states})")
    start = time.perf_counter()
    tbl, where, total = _batches(root, run_id, kind)
    if total == 0:
        raise WarehouseError(f"run {run_id!r} has no {kind} states to search")
    keep = total if max_states is None else min(total, max_states)
    mask = _sample_mask(total, keep, seed) if keep < total else None
    dim = tbl.schema.field("vector").type.list_size
    spec = index or factory_string(keep)
    faiss_index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    _, _, label, pos = _SOURCE[kind]
    if not faiss_index.is_trained:
        wanted = TRAIN_PER_LIST * faiss.extract_index_ivf(faiss_index).nlist
        faiss_index.train(_training_sample(tbl, where, total, mask, seed, wanted))
    sent, place, codes, vocab, seen = [], [], [], {}, 0
    for batch in _read(tbl, where, ["sent_id", pos, label, "vector"]):
        chosen = np.ones(batch.num_rows, dtype=bool) if mask is None else mask[seen : seen + batch.num_rows]
        seen += batch.num_rows
        batch = batch.filter(pa.array(chosen))
        faiss_index.add(_vectors(batch))
        sent.append(batch.column("sent_id").to_numpy())
        place.append(batch.column(pos).to_numpy())
        codes.append(_label_codes(batch.column(label).to_pylist(), vocab))
    rows = pa.table(
        {
            "sent_id": pa.array(np.concatenate(sent), pa.int64()),
            "pos": pa.array(np.concatenate(place), pa.int32()),
            "label": pa.array(np.concatenate(codes), pa.int32()),
        }
    )
    info = BankInfo(
        run_id=run_id,
        kind=kind,
        index=spec,
        states=int(faiss_index.ntotal),
        total=total,
        max_states=max_states,
        seed=seed,
        dim=dim,
        build_seconds=round(time.perf_counter() - start, 3),
        files=("", ""),
    )
    meta = {k: v for k, v in asdict(info).items() if k != "files"}
    return replace(
        info, files=save_bank(root, run_id, kind, faiss_index, rows, {**meta, "vocab": list(vocab)})
    )


def _training_sample(
    tbl: lancedb.table.Table, where: str, total: int, mask: np.ndarray | None, seed: int, wanted: int
) -> np.ndarray:
    """Up to ``wanted`` of the bank's vectors, seeded, for training the IVF quantiser."""
    pool = np.flatnonzero(mask) if mask is not None else np.arange(total)
    pick = np.zeros(total, dtype=bool)
    pick[np.random.default_rng(seed + 1).choice(pool, min(len(pool), wanted), replace=False)] = True
    out, seen = [], 0
    for batch in _read(tbl, where, ["vector"]):
        chosen = pick[seen : seen + batch.num_rows]
        seen += batch.num_rows
        if chosen.any():
            out.append(_vectors(batch.filter(pa.array(chosen))))
    return np.concatenate(out)


def bank_info(root: Path, run_id: str, kind: Kind) -> BankInfo | None:
    """The stored bank's description, or None when none was built."""
    path = banks_dir(root, run_id) / f"{kind}.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    meta.pop("vocab")
    return BankInfo(**{**meta, "files": tuple(meta["files"])})


def open_bank(root: Path, run_id: str, kind: Kind) -> Bank | None:
    """The stored ``kind`` bank of ``run_id`` (None when none was built). The index is memory-mapped:
    opening costs nothing, and only the lists a search reads are paged in (clean pages the kernel
    may drop again), so a trace that asks few questions of a large bank stays small."""
    d = banks_dir(root, run_id)
    for attempt in range(2):  # a rebuild may replace the files between reading the json and opening them
        path = d / f"{kind}.json"
        if not path.is_file():
            return None
        meta = json.loads(path.read_text())
        vocab = {t: i for i, t in enumerate(meta.pop("vocab"))}
        info = BankInfo(**{**meta, "files": tuple(meta["files"])})
        try:
            index = faiss.read_index(str(_local(d / info.files[0])), MMAP)
            with (d / info.files[1]).open("rb") as f:
                rows = pq.read_table(f)
        except (RuntimeError, OSError, pa.ArrowException) as e:
            if attempt == 0 and not (d / info.files[0]).exists():
                continue
            raise WarehouseError(f"damaged neighbour bank: {e}", path=str(d / info.files[0])) from e
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = NPROBE
        return Bank(
            info, index, rows["sent_id"].to_numpy(), rows["pos"].to_numpy(), rows["label"].to_numpy(), vocab
        )
    return None


def _local(path: Path) -> Path:
    """``path`` itself, or for a bank in S3 its copy in the local cache (bank files are never
    rewritten under the same name, so a copy stays valid); memory-mapping needs a local file."""
    if not is_remote(path):
        return path
    cache = Path(os.environ.get("BEAMSCOPE_CACHE", Path.home() / ".cache" / "beamscope")) / "banks"
    local = cache / hashlib.sha256(str(path).encode()).hexdigest()[:24] / path.name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}")
        path.fs.get_file(path.path, str(tmp))
        os.replace(tmp, local)
    return local


@dataclass
class TrainingStates:
    """The banks of the training run that serves a run."""

    run_id: str
    encoder: Bank
    decoder: Bank

    def bank(self, kind: Kind) -> Bank:
        return self.encoder if kind == "encoder" else self.decoder

    def describe(self) -> dict[str, dict]:
        """Per kind, the bank's description (recorded in the served run's options)."""
        return {
            b.info.kind: {k: getattr(b.info, k) for k in ("states", "total", "max_states", "seed", "index")}
            for b in (self.encoder, self.decoder)
        }


def training_states(
    root: Path, run_id: str, max_states: int | None = None, seed: int = 0, build: bool = True
) -> TrainingStates:
    """The banks of training run ``run_id``; missing ones (or ones kept with another
    ``max_states``, when ``build``) are built first."""
    banks = {}
    for kind in KINDS:
        info = bank_info(root, run_id, kind)
        stale = info is None or (info.max_states, info.seed) != (max_states, seed)
        if stale and build:
            build_bank(root, run_id, kind, max_states, seed)
        bank = open_bank(root, run_id, kind)
        if bank is None:
            raise WarehouseError(f"training run {run_id!r} has no {kind} bank; run `beamscope index`")
        banks[kind] = bank
    attended, vocab = _attended(root, run_id, banks["decoder"])
    decoder = replace(banks["decoder"], attended=attended, attended_vocab=vocab)
    return TrainingStates(run_id, banks["encoder"], decoder)


def _attended(root: Path, run_id: str, bank: Bank) -> tuple[np.ndarray, dict[str, int]]:
    """Per decoder bank row, the code of the source token the training run's reference decoding
    attended most at that step, and the codes' vocabulary."""
    from pipeline.writer.run import RunWriter  # the writer imports this module's readers

    run = RunWriter(root, run_id)
    steps = pl.from_arrow(run.read_table("reference_steps", ["sent_id", "step", "attn_argmax_src_pos"]))
    tokens = pl.from_arrow(run.read_table("source_tokens", ["sent_id", "src_pos", "token"]))
    rows = pl.DataFrame({"sent_id": bank.sent_id, "step": bank.pos.astype(np.int32)}).with_row_index("row")
    found = (
        rows.join(steps, on=["sent_id", "step"], how="left")
        .join(tokens, left_on=["sent_id", "attn_argmax_src_pos"], right_on=["sent_id", "src_pos"], how="left")
        .sort("row")["token"]
        .to_list()
    )
    vocab = {t: i for i, t in enumerate(sorted({t for t in found if t is not None}))}
    return np.array([NO_LABEL if t is None else vocab[t] for t in found], dtype=np.int32), vocab


def resolve_training_run(
    root: Path, run_id: str, model_hash: str, split: str, asked: str | None
) -> str | None:
    """The one rule for which training run serves a run (recorded in ``runs.neighbours_run``).

    ``asked`` 'auto': the newest complete train-split run of the same model that kept its
    vectors (none for a train-split run); None or 'none': no neighbours; else that run, which
    must be complete, of the same model and have kept its vectors.
    """
    if asked in (None, "none") or (asked == "auto" and split == "train"):
        return None
    runs = read_manifest(root)["runs"] if (root / MANIFEST).is_file() else {}
    if asked != "auto":
        run = runs.get(asked)
        if run is None or run.get("status") != "complete":
            raise WarehouseError(f"neighbours run {asked!r} is not a complete run of this warehouse")
        if run.get("model_hash") != model_hash:
            raise WarehouseError(f"neighbours run {asked!r} was traced with another model")
        if not run.get("vectors", True):
            raise WarehouseError(f"neighbours run {asked!r} kept no vectors (traced with --no-vectors)")
        return asked
    found = [
        (r.get("created_at", ""), rid)
        for rid, r in runs.items()
        if rid != run_id
        and r.get("status") == "complete"
        and r.get("split") == "train"
        and r.get("model_hash") == model_hash
        and r.get("vectors", True)
    ]
    return max(found)[1] if found else None
