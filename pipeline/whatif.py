"""What-if re-decoding of one sentence (goal G3): the trace's own beam search and records, in memory.

An ``Intervention`` changes the source, forces the output's first tokens, and/or edits the
cross-attention of one target step; ``redecode`` traces the sentence under it with the run's
decoding settings and returns the same tables a trace writes (one sentence, ``sent_id`` 0), so
the dashboard shows the alternative with the same five-stage views as the original. Nothing is
written unless ``save_run`` is called. The reference is forced without the attention edit: its
score stays the model's own, so score differences show what the intervention did to the output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.beam import DecodeConfig
from pipeline.clusters import run_clusters
from pipeline.corpus import Example
from pipeline.metrics import corpus_scores
from pipeline.models.protocol import AttentionEdit, Seq2SeqAdapter
from pipeline.neighbours import TrainingStates
from pipeline.records import PartBuilder, vocabulary
from pipeline.taxonomy import Taxonomy
from pipeline.trace import trace_part
from pipeline.writer.run import RunWriter, run_row
from schemas import ConfigError

SPLIT = "what-if"


@dataclass(frozen=True)
class Intervention:
    """One what-if: the (possibly edited) source, forced output prefix, attention edit."""

    source: str
    reference: str | None = None
    prefix: tuple[int, ...] = ()  # target token ids the output must start with
    edit: AttentionEdit | None = None

    def describe(self, model: Seq2SeqAdapter) -> dict[str, Any]:
        """A JSON-able record of the intervention (saved with a what-if run)."""
        return {
            "source": self.source,
            "prefix": model.tgt_pieces(list(self.prefix)),
            "attention_edit": None if self.edit is None else dataclasses.asdict(self.edit),
        }


@dataclass(frozen=True)
class WhatIfResult:
    intervention: Intervention
    tables: dict[str, pa.Table]  # every per-sentence table, as a trace writes them
    vectors: dict[str, pa.Table]  # encoder_states / decoder_states
    vocabulary: pa.Table  # the model's tokens by id (what the tables' ids stand for)


def redecode(
    model: Seq2SeqAdapter,
    intervention: Intervention,
    decoding: DecodeConfig,
    training: TrainingStates | None = None,
    taxonomy: Taxonomy | None = None,
    agreement: str = "all",
) -> WhatIfResult:
    """Trace one sentence under ``intervention``; a ConfigError when the model can't take it."""
    if not intervention.source.strip():
        raise ConfigError("the what-if source is empty")
    if len(intervention.prefix) >= decoding.max_len:
        raise ConfigError(f"the forced prefix is longer than the run's max length {decoding.max_len}")
    if any(not 0 <= t < model.vocab_size for t in intervention.prefix):
        raise ConfigError("the forced prefix has a token outside the model's vocabulary")
    edit = intervention.edit
    n_src = len(model.src_ids(intervention.source))
    if edit is not None and any(not 0 <= p < n_src for p in edit.positions):
        raise ConfigError(f"attention edit positions must be source positions 0..{n_src - 1}")
    if edit is not None and not 0 <= edit.step < decoding.max_len:
        raise ConfigError(f"the attention edit's step must be 0..{decoding.max_len - 1}")
    if edit is not None and not (math.isfinite(edit.factor) and edit.factor >= 0):
        raise ConfigError("the attention scale factor must be a finite number >= 0")
    example = Example(0, intervention.source, intervention.reference, SPLIT, 1)
    edited = None if edit is None else edit.step
    builder = PartBuilder(model, SPLIT, SPLIT, taxonomy, training, edited_step=edited, agreement=agreement)
    trace_part(model, [example], decoding, builder, 1, prefix=intervention.prefix, edit=edit)
    tables = builder.tables()
    if tables["skipped"].num_rows:
        raise ConfigError(tables["skipped"]["reason"][0].as_py())
    return WhatIfResult(intervention, tables, builder.vectors(), vocabulary(model, SPLIT))


def save_run(
    root: Path, run_id: str, result: WhatIfResult, base: dict[str, Any], model: Seq2SeqAdapter
) -> str:
    """Write a what-if as a new one-sentence run (split 'what-if') of the warehouse at ``root``.

    ``base`` is the ``runs`` row of the run the what-if started from (model, decoding, options).
    """
    options = {**json.loads(base["options"]), "what_if": result.intervention.describe(model)}
    tables = {name: _with_run(t, run_id) for name, t in result.tables.items()}
    vectors = {name: _with_run(t, run_id) for name, t in result.vectors.items()}
    row = run_row(
        model_name=base["model_name"],
        model_path=base["model_path"],
        model_hash=base["model_hash"],
        arch=base["arch"],
        corpus=f"what-if on {base['run_id']}",
        split=SPLIT,
        decoding=json.loads(base["decoding"]),
        options=options,
        n_sentences=1,
        n_skipped=0,
        neighbours_run=base.get("neighbours_run"),
    )
    fingerprint = hashlib.sha256(json.dumps([run_id, options], sort_keys=True).encode()).hexdigest()[:16]
    writer = RunWriter(root, run_id)
    writer.begin(fingerprint, 1, row, _with_run(result.vocabulary, run_id))
    writer.write_part(0, tables, vectors, (0, 1))
    sent = tables["sentences"]
    reference = sent["reference"][0].as_py()
    scores = corpus_scores([sent["hypothesis"][0].as_py()], [reference]) if reference is not None else {}
    writer.write_run_tables(run_clusters(writer))  # one sentence: no clusters, empty tables
    writer.finish({**row, **scores}, {"n_sentences": 1, "n_skipped": 0})
    return run_id


def _with_run(table: pa.Table, run_id: str) -> pa.Table:
    cols = [
        pa.array([run_id] * table.num_rows, type=f.type) if f.name == "run_id" else table[f.name]
        for f in table.schema
    ]
    return pa.Table.from_arrays(cols, schema=table.schema)
