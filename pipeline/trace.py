"""``beamscope trace``: decode a corpus with the traced beam search into a warehouse run.

The corpus is cut into parts of ``part_size`` sentences; each part is decoded in
length-sorted batches, written (Parquet + vectors) and marked done. A run started again with
the same arguments resumes after its last done part.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from tqdm import tqdm

from pipeline.agreement import AGREEMENT_MODES
from pipeline.attribute import ENTRY as ATTRIBUTION_ENTRY
from pipeline.attribute import manifest_entry
from pipeline.attribution import Method, Produced, attribute
from pipeline.batching import length_batches, pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.calibration import calibrated_taxonomy
from pipeline.clusters import run_clusters
from pipeline.corpus import Corpus, Example, read_corpus
from pipeline.forced import force_decode
from pipeline.metrics import corpus_scores
from pipeline.models import for_decoding, load_model, resolve_device
from pipeline.models.protocol import AttentionEdit, Encoded, Seq2SeqAdapter
from pipeline.neighbours import TrainingStates, resolve_training_run, training_states
from pipeline.ray_engine import Cluster, RayEngine, connect_cluster
from pipeline.records import PartBuilder, Traced, vocabulary
from pipeline.records.attention import AttentionKeep
from pipeline.taxonomy import Taxonomy
from pipeline.threads import default_threads, torch_threads
from pipeline.words import shown_tokens, word_neighbours
from pipeline.writer.run import RunWriter, run_row
from schemas import ConfigError
from schemas.layout import crash_point, warehouse_root
from schemas.tables import VECTOR_DTYPES


@dataclass(frozen=True)
class TraceConfig:
    """Options of ``beamscope trace`` (all recorded in ``runs``)."""

    model: str
    corpus: str
    warehouse: str
    refs: str | None = None
    split: str | None = None  # defaults to the task split, or 'test' for files
    run_name: str | None = None
    decoding: DecodeConfig = field(default_factory=DecodeConfig)
    batch_size: int = 64
    part_size: int = 1024
    vectors: bool = True
    device: str = "auto"
    taxonomy: Taxonomy | None = None  # None: the model's latest calibration here, else the defaults
    neighbours_run: str | None = "auto"  # training run for neighbour blame; auto = same model's
    agreement: str = "divergence"  # neighbour agreement only where the blame reads it, or of every state
    bank_size: int | None = None  # most training states per kind in the neighbour bank
    vector_dtype: str = "float16"  # of the stored encoder/decoder states
    attention_keep: AttentionKeep = AttentionKeep()  # long sources: store each row's top-k / top-p
    threads: int | None = None  # torch threads while decoding (None: see ``default_threads``)
    engine: RayEngine | None = None  # None: decode in this process; else on a Ray cluster
    attribution: Method | None = None  # also attribute every produced token (``pipeline.attribution``)
    examples: Corpus | None = None  # in-memory sentences, traced instead of reading ``corpus``
    skips: Mapping[int, str] | None = None  # sent_id -> why it is recorded as skipped, not decoded
    perturbation: dict[str, Any] | None = None  # what the examples perturb (``pipeline.perturb``)
    faults: dict[str, Any] | None = None  # the faults planted in the model (``pipeline.fault_runs``)

    def check(self) -> TraceConfig:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.part_size < 1:
            raise ConfigError(f"--part-size must be at least 1 (got {self.part_size})")
        self.attention_keep.check()
        if not math.isfinite(self.decoding.length_penalty):
            raise ConfigError(f"--length-penalty must be finite (got {self.decoding.length_penalty})")
        if self.agreement not in AGREEMENT_MODES:
            raise ConfigError(
                f"--agreement must be one of {', '.join(AGREEMENT_MODES)} (got {self.agreement!r})"
            )
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ConfigError(
                f"--vector-dtype must be one of {', '.join(VECTOR_DTYPES)} (got {self.vector_dtype!r})"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads})")
        if self.bank_size is not None and self.bank_size < 1:
            raise ConfigError(f"--bank-size must be at least 1 (got {self.bank_size})")
        if self.attribution is not None:
            self.attribution.check()
        return self


@dataclass(frozen=True)
class TraceSummary:
    run_id: str
    warehouse: Path
    n_sentences: int
    n_skipped: int
    resumed_parts: int
    already_complete: bool
    calibration: dict[str, Any] | None = None  # where the blame's thresholds come from, if calibrated


def default_run_id(model: Seq2SeqAdapter, corpus: Corpus) -> str:
    stem = corpus.spec.removeprefix("task:") if corpus.spec.startswith("task:") else Path(corpus.spec).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model.name}.{stem}.{corpus.split}").strip("-.")[:128]


@dataclass(frozen=True)
class TracePlan:
    """What a trace decodes and where, decided once by the driver (both engines share it)."""

    cfg: TraceConfig
    root: Path  # resolved once (for S3 that asks the bucket)
    run_id: str
    split: str
    decoding: DecodeConfig
    examples: list[Example]
    n_parts: int
    neighbours_run: str | None
    row: dict[str, Any]
    calibration: dict[str, Any] | None = None  # where the blame's thresholds come from

    def chunk(self, part: int) -> list[Example]:
        size = self.cfg.part_size
        return self.examples[part * size : (part + 1) * size]


def trace(cfg: TraceConfig, progress: bool = True, model: Seq2SeqAdapter | None = None) -> TraceSummary:
    """Trace ``cfg.corpus`` with ``cfg.model`` (loaded unless ``model`` is it) into ``cfg.warehouse``;
    resumable."""
    cfg.check()
    if cfg.engine is None:
        return _trace(cfg, None, progress, model)
    cluster = connect_cluster(cfg.engine.check())  # refused before anything is read or written
    try:
        return _trace(cfg, cluster, progress)
    finally:
        cluster.close()


def _trace(
    cfg: TraceConfig, cluster: Cluster | None, progress: bool, model: Seq2SeqAdapter | None = None
) -> TraceSummary:
    probe = cfg.examples or read_corpus(cfg.corpus, cfg.refs)
    corpus = dataclasses.replace(probe, split=cfg.split or probe.split)
    model, decoding = for_decoding(model or load_model(cfg.model, resolve_device(cfg.device)), cfg.decoding)
    cfg = dataclasses.replace(cfg, decoding=decoding)
    crash_point("model_load")
    plan, fingerprint = _plan(cfg, model, corpus)
    # refused before anything is written
    training = training_states(plan.root, plan.neighbours_run, cfg.bank_size) if plan.neighbours_run else None
    if training is not None:  # what the neighbours were searched in (shown with them)
        options = {**json.loads(plan.row["options"]), "neighbours": training.describe()}
        plan = dataclasses.replace(plan, row={**plan.row, "options": json.dumps(options, sort_keys=True)})
    writer = RunWriter(plan.root, plan.run_id)
    done = writer.begin(fingerprint, plan.n_parts, plan.row, vocabulary(model, plan.run_id))
    n = len(plan.examples)
    if writer.is_complete():
        n_skipped = writer.count_rows("skipped")
        return TraceSummary(plan.run_id, plan.root, n, n_skipped, len(done), True, plan.calibration)
    todo = [p for p in range(plan.n_parts) if p not in done]
    bar = tqdm(
        total=n,
        initial=n - sum(len(plan.chunk(p)) for p in todo),
        desc=f"trace {plan.run_id}",
        unit="sent",
        disable=not progress,
    )
    try:
        if cluster is not None:
            cluster.trace_parts(plan, todo, writer, bar)
        else:
            with torch_threads(cfg.threads):
                for part in todo:
                    tables, vectors, sent_range = trace_plan_part(
                        model, plan, plan.chunk(part), training, bar
                    )
                    writer.write_part(part, tables, vectors, sent_range)
    except BaseException:
        bar.leave = False  # an error's one line is not left beside a half bar
        raise
    finally:
        bar.close()
    n_skipped = writer.count_rows("skipped")
    sentences = writer.read("sentences", ["hypothesis", "reference"])
    with_ref = [(h, r) for h, r in zip(*sentences, strict=True) if r is not None]
    scores = corpus_scores([h for h, _ in with_ref], [r for _, r in with_ref])
    neighbours = word_neighbours(model, plan.run_id, shown_tokens(writer))
    writer.write_run_tables({**run_clusters(writer), "word_neighbours": neighbours})
    stats: dict[str, Any] = {"n_sentences": n, "n_skipped": n_skipped}
    if cfg.attribution is not None:  # as ``beamscope attribute`` of every sentence records it
        entry = manifest_entry(cfg.attribution, None, "all")
        stats[ATTRIBUTION_ENTRY] = {**entry, "parts_done": list(range(plan.n_parts)), "status": "complete"}
    writer.finish({**plan.row, "n_skipped": n_skipped, **scores}, stats)
    return TraceSummary(plan.run_id, plan.root, n, n_skipped, len(done), False, plan.calibration)


def _plan(cfg: TraceConfig, model: Seq2SeqAdapter, corpus: Corpus) -> tuple[TracePlan, str]:
    """The run's plan (its ``runs`` row included) and its fingerprint (what a resume must match)."""
    dec = cfg.decoding.check(model.vocab_size)
    run_id = cfg.run_name or default_run_id(model, corpus)
    root = warehouse_root(cfg.warehouse)
    model_hash = getattr(model, "hash", "")
    neighbours_run = resolve_training_run(root, run_id, model_hash, corpus.split, cfg.neighbours_run)
    calibrated = calibrated_taxonomy(root, model_hash) if cfg.taxonomy is None else None
    cfg = dataclasses.replace(cfg, taxonomy=calibrated[0] if calibrated else cfg.taxonomy or Taxonomy())
    options = {
        "batch_size": cfg.batch_size,
        "part_size": cfg.part_size,
        "vectors": cfg.vectors,
        "vector_dtype": cfg.vector_dtype,
        "refs": cfg.refs,
        "corpus_hash": corpus.fingerprint(),
        "device": str(model.device),
        "threads": cfg.threads or (cfg.engine.threads() if cfg.engine is not None else default_threads()),
        "taxonomy": dataclasses.asdict(cfg.taxonomy),
        "agreement": cfg.agreement,
        "bank_size": cfg.bank_size,
        "engine": cfg.engine.describe() if cfg.engine is not None else "local",
        "attribution": None if cfg.attribution is None else cfg.attribution.describe(),
    }
    if cfg.attention_keep.prunes:  # readers: attention rows hold target_steps.attn_kept_mass
        options["attention_keep"] = dataclasses.asdict(cfg.attention_keep)
    if cfg.perturbation is not None:
        options["perturbation"] = cfg.perturbation
    if cfg.faults is not None:
        options["faults"] = cfg.faults
    if calibrated:  # where the thresholds come from
        options["calibration"] = calibrated[1]
    # what does not change the rows: a run resumes with another batch size, device or engine
    fingerprint_src = {
        k: v for k, v in options.items() if k not in ("device", "batch_size", "threads", "engine")
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            [model_hash, cfg.corpus, corpus.split, dataclasses.asdict(dec), fingerprint_src, neighbours_run],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    row = run_row(
        model_name=model.name,
        model_path=str(Path(cfg.model).resolve()),
        model_hash=model_hash,
        arch=model.arch,
        corpus=cfg.corpus,
        split=corpus.split,
        decoding=dataclasses.asdict(dec),
        options=options,
        n_sentences=len(corpus.examples),
        n_skipped=0,
        neighbours_run=neighbours_run,
    )
    n_parts = (len(corpus.examples) + cfg.part_size - 1) // cfg.part_size
    where = calibrated[1] if calibrated else None
    plan = TracePlan(
        cfg, root, run_id, corpus.split, dec, corpus.examples, n_parts, neighbours_run, row, where
    )
    return plan, fingerprint


def trace_plan_part(
    model: Seq2SeqAdapter,
    plan: TracePlan,
    chunk: list[Example],
    training: TrainingStates | None,
    bar: tqdm | None = None,
) -> tuple[dict[str, pa.Table], dict[str, pa.Table], tuple[int, int]]:
    """One part (``chunk``) of a plan, traced: its tables, its vectors and its sentence-id range."""
    cfg = plan.cfg
    builder = PartBuilder(
        model,
        plan.run_id,
        plan.split,
        cfg.taxonomy,
        training,
        cfg.vectors,
        agreement=cfg.agreement,
        vector_dtype=cfg.vector_dtype,
        attention_keep=cfg.attention_keep,
    )
    skips = cfg.skips or {}
    decoded = iter(
        decode_part(model, [e for e in chunk if e.sent_id not in skips], plan.decoding, cfg.batch_size, bar)
    )
    results = [skips[e.sent_id] if e.sent_id in skips else next(decoded) for e in chunk]
    tables = record_part(builder, chunk, results).tables()
    if cfg.attribution is not None:
        items = [
            Produced(
                r.example.sent_id, r.src_ids, [*r.decoded.ids, *([model.eos_id] if r.decoded.ended else [])]
            )
            for r in results
            if not isinstance(r, str)
        ]
        tables.update(attribute(model, items, cfg.attribution, plan.run_id, cfg.batch_size))
    return tables, builder.vectors(), (chunk[0].sent_id, chunk[-1].sent_id + 1)


def trace_part(
    model: Seq2SeqAdapter,
    chunk: list[Example],
    dec: DecodeConfig,
    builder: PartBuilder,
    batch_size: int,
    bar: tqdm | None = None,
    prefix: Sequence[int] = (),
    edit: AttentionEdit | None = None,
) -> PartBuilder:
    """Decode one part of a corpus into ``builder`` (rows in ``sent_id`` order); ``prefix`` and
    ``edit`` are what-if interventions applied to every sentence (see ``pipeline.whatif``)."""
    return record_part(builder, chunk, decode_part(model, chunk, dec, batch_size, bar, prefix, edit), bar)


@torch.inference_mode()
def decode_part(
    model: Seq2SeqAdapter,
    chunk: list[Example],
    dec: DecodeConfig,
    batch_size: int,
    bar: tqdm | None = None,
    prefix: Sequence[int] = (),
    edit: AttentionEdit | None = None,
) -> list[Traced | str]:
    """The traced decoding (beam search and the reference's forced decoding) of every sentence
    of ``chunk``, in order; a string says why a sentence was skipped."""
    src_ids = [model.src_ids(ex.source) for ex in chunk]
    ok = [i for i, ids in enumerate(src_ids) if model.max_src_len is None or len(ids) <= model.max_src_len]
    results: dict[int, Traced | str] = {
        i: f"source has {len(src_ids[i])} tokens; the model takes at most {model.max_src_len}"
        for i in range(len(chunk))
        if i not in set(ok)
    }
    for batch in length_batches([len(src_ids[i]) for i in ok], batch_size):
        idx = [ok[j] for j in batch]
        src, mask = pad([src_ids[i] for i in idx], model.pad_id, model.device)
        enc = model.encode(src, mask, all_layers=dec.all_layers)
        prefixes = [prefix] * len(idx) if prefix else None
        decoded = beam_search(model, enc, dec, trace=True, prefixes=prefixes, edit=edit)
        with_ref = [j for j, i in enumerate(idx) if chunk[i].reference is not None]
        forced = {}
        if with_ref:
            sub = _select(enc, with_ref)
            refs = [model.tgt_ids(chunk[idx[j]].reference) for j in with_ref]
            forced = dict(
                zip(with_ref, force_decode(model, sub, refs, dec.length_penalty, dec.per_head), strict=True)
            )
        states = enc.states.float().cpu().numpy()
        layers = enc.layer_states.float().cpu().numpy() if enc.layer_states is not None else None
        for j, i in enumerate(idx):
            n = len(src_ids[i])
            layer_states = None if layers is None else layers[j, :, :n]
            results[i] = Traced(chunk[i], src_ids[i], decoded[j], forced.get(j), states[j, :n], layer_states)
        if bar is not None:
            bar.update(len(idx))
        crash_point("batch")
    return [results[i] for i in range(len(chunk))]


def record_part(
    builder: PartBuilder, chunk: list[Example], results: list[Traced | str], bar: tqdm | None = None
) -> PartBuilder:
    """Turn a decoded part into ``builder``'s rows (metrics, records, blame)."""
    for ex, r in zip(chunk, results, strict=True):
        if isinstance(r, str):
            builder.skip(ex, r)
            if bar is not None:
                bar.update(1)
        else:
            builder.add(r)
    return builder


def _select(enc: Encoded, rows: list[int]) -> Encoded:
    """The encoder output of a subset of the batch (``memory`` too, where it is per sentence)."""
    index = torch.tensor(rows, device=enc.states.device)
    return dataclasses.replace(
        enc,
        states=enc.states.index_select(0, index),
        mask=enc.mask.index_select(0, index),
        layer_states=None if enc.layer_states is None else enc.layer_states.index_select(0, index),
        memory=_select_rows(enc.memory, index, enc.states.shape[0]),
    )


def _select_rows(value: Any, index: torch.Tensor, batch: int) -> Any:
    """Tensors [batch, ...] inside ``value`` (dicts, lists, tuples) cut to ``index``; the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index) if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _select_rows(v, index, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_select_rows(v, index, batch) for v in value)
    return value
