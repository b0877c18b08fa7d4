"""Turn traced sentences into the warehouse's Arrow tables (schemas in ``schemas.tables``).

A ``PartBuilder`` collects the sentences of one part in ``sent_id`` order and emits one
table per warehouse table plus the LanceDB vector tables, with columns built from numpy
arrays (no per-row Python objects for the large tables).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.agreement import AGREEMENT_COLUMNS, AgreementQueue, PendingBlame, divergence_agreement, focus
from pipeline.beam import STATUS_NAMES, Decoded
from pipeline.corpus import Example
from pipeline.errors import Evidence, Taxonomy, classify
from pipeline.forced import ForcedTrace
from pipeline.metrics import first_divergence, is_search_error, sentence_scores
from pipeline.models.protocol import Seq2SeqAdapter
from pipeline.neighbours import TrainingStates
from schemas import PART_TABLES, TABLES, decoder_states_schema, encoder_states_schema

_STATUS = np.array(STATUS_NAMES, dtype=object)


@dataclass
class Traced:
    """Everything recorded for one sentence."""

    example: Example
    src_ids: list[int]
    decoded: Decoded
    forced: ForcedTrace | None
    enc_states: np.ndarray  # [src, d] last layer
    enc_layers: np.ndarray | None  # [layers, src, d]


def vocabulary(model: Seq2SeqAdapter, run_id: str) -> pa.Table:
    """The model's tokens by id on both sides: the run's ``vocabulary`` table."""
    sizes = {"src": (model.src_vocab_size, model.src_pieces), "tgt": (model.vocab_size, model.tgt_pieces)}
    sides, ids, tokens = [], [], []
    for side, (size, pieces) in sizes.items():
        sides += [side] * size
        ids += range(size)
        tokens += pieces(list(range(size)))
    return pa.table(
        {"run_id": [run_id] * len(ids), "side": sides, "token_id": ids, "token": tokens},
        schema=TABLES["vocabulary"],
    )


def _entropy(w: np.ndarray) -> np.ndarray:
    """Entropy over the last axis of attention rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(w > 0, w * np.log(w), 0.0).sum(-1)


def _lists(values: list[np.ndarray], typ: pa.DataType) -> pa.Array:
    """A list column from per-row numpy arrays."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=typ))


class PartBuilder:
    """Rows of one part of a run, for every table."""

    def __init__(
        self,
        model: Seq2SeqAdapter,
        run_id: str,
        split: str,
        taxonomy: Taxonomy | None = None,
        training: TrainingStates | None = None,
        keep_vectors: bool = True,
        edited_step: int | None = None,
        agreement: str = "all",
        vector_dtype: str = "float16",
    ) -> None:
        """``edited_step``: a what-if edited the attention from that step on, so the hypothesis'
        decoder states there are its own even where its prefix is the reference's.
        ``agreement``: which states get neighbour agreement (``pipeline.agreement.AGREEMENT_MODES``)."""
        self.model, self.run_id, self.split = model, run_id, split
        self.edited_step, self.agreement, self.vector_dtype = edited_step, agreement, vector_dtype
        self.taxonomy, self.training, self.keep_vectors = taxonomy or Taxonomy(), training, keep_vectors
        self.tgt_tokens = np.array(model.tgt_pieces(list(range(model.vocab_size))), dtype=object)
        self.cols: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self._n: dict[str, int] = defaultdict(int)  # rows so far per table
        self._agreement = AgreementQueue(training, self.taxonomy.neighbours)  # searched per part
        self._pending: list[PendingBlame] = []  # wrong sentences waiting for their agreement

    def _extend(self, table: str, **columns: np.ndarray | list) -> None:
        if "sent_id" in columns:
            self._n[table] += len(columns["sent_id"])
        for name, values in columns.items():
            self.cols[table][name].append(
                np.asarray(values) if not isinstance(values, np.ndarray) else values
            )

    def skip(self, ex: Example, reason: str) -> None:
        self._extend("skipped", sent_id=[ex.sent_id], file=[ex.file], line=[ex.line], reason=[reason])

    def add(self, tr: Traced) -> None:
        ex, dec, ref = tr.example, tr.decoded, tr.forced
        steps, tree = dec.steps, dec.tree
        assert steps is not None and tree is not None, "records need a traced decode"
        sid = ex.sent_id
        hypothesis = self.model.detokenize(dec.ids)
        scores = None if ex.reference is None else sentence_scores(hypothesis, ex.reference)
        hyp_seq = [*dec.ids, self.model.eos_id] if dec.ended else list(dec.ids)
        exact = None if ex.reference is None else hypothesis == ex.reference
        diverge = None if ref is None else first_divergence(hyp_seq, ref.token_ids.tolist())
        search = None if ref is None else is_search_error(bool(exact), dec.score, ref.score)
        n_src = len(tr.src_ids)
        src_tokens = self.model.src_pieces(tr.src_ids)
        unknown = np.asarray(tr.src_ids) == getattr(self.model, "unk_id", -1)
        verdict, evidence = None, None
        base = {t: self._n[t] for t in AGREEMENT_COLUMNS}  # the sentence's first row in each table
        if ref is not None and not exact and diverge is not None:
            evidence = self._evidence(tr, hyp_seq, diverge, bool(search), bool(unknown.any()))
            if self.training is None:
                verdict = classify(evidence, self.taxonomy, getattr(self.model, "unk_id", None))
            else:
                self._pending.append(PendingBlame(self._n["sentences"], evidence, base))
        self._extend(
            "sentences",
            sent_id=[sid],
            split=[self.split],
            source=[ex.source],
            reference=[ex.reference],
            hypothesis=[hypothesis],
            src_len=[len(tr.src_ids)],
            ref_len=[None if ref is None else len(ref.token_ids)],
            hyp_len=[len(hyp_seq)],
            hyp_logprob=[dec.logprob],
            hyp_score=[dec.score],
            ref_logprob=[None if ref is None else ref.logprob],
            ref_score=[None if ref is None else ref.score],
            exact_match=[exact],
            is_search_error=[search],
            first_divergence_step=[diverge],
            bleu=[None if scores is None else scores.bleu],
            chrf=[None if scores is None else scores.chrf],
            ter=[None if scores is None else scores.ter],
            blamed_stage=[None if verdict is None else verdict.stage],
            nn_encoder_agreement=[None],
            nn_decoder_agreement=[None],
            nn_reference_agreement=[None],
            n_beam_nodes=[len(tree.parent)],
        )
        self.cols["sentences"]["error_tags"].append([None if verdict is None else list(verdict.tags)])
        self._extend(
            "source_tokens",
            sent_id=np.full(n_src, sid),
            src_pos=np.arange(n_src),
            token=src_tokens,
            token_id=np.asarray(tr.src_ids),
            is_unknown=unknown,
            is_word_start=np.asarray(self.model.word_starts(src_tokens, "src"), dtype=bool),
            attention_received=steps.mean_attention[:, :n_src].sum(0),
        )
        self._steps(
            "target_steps",
            sid,
            steps.token_ids,
            steps.logprobs,
            steps.entropy,
            steps.mean_attention[:, :n_src],
            topk_token_ids=steps.topk_ids,
            topk_probs=np.exp(steps.topk_logprobs),
        )
        self._attention(sid, "hyp", steps.attention, steps.mean_attention, n_src)
        n = len(tree.parent)
        self._extend(
            "beam_nodes",
            sent_id=np.full(n, sid),
            node_id=np.arange(n),
            parent_id=np.where(tree.parent >= 0, tree.parent, -1),
            step=tree.step,
            token=self.tgt_tokens[tree.token_id],
            token_id=tree.token_id,
            token_logprob=tree.token_logprob,
            score=tree.score,
            rank_in_beam=tree.rank,
            status=_STATUS[tree.status],
            on_best_path=tree.on_best_path,
        )
        self._vectors_enc(sid, src_tokens, tr)
        self._vectors_dec(sid, "hyp", steps.token_ids, steps.states, self._shared_steps(tr, diverge))
        if ref is not None:
            self._steps(
                "reference_steps",
                sid,
                ref.token_ids,
                ref.logprobs,
                ref.entropy,
                ref.mean_attention[:, :n_src],
                rank=ref.ranks,
                top1_token_id=ref.top1_ids,
                top1_prob=np.exp(ref.top1_logprobs),
            )
            self._attention(sid, "ref", ref.attention, ref.mean_attention, n_src)
            self._vectors_dec(sid, "ref", ref.token_ids, ref.states, 0)
        if self.training is not None and self.agreement == "all":
            self._queue_neighbours(tr, src_tokens, diverge, base, None)
        elif self.training is not None and evidence is not None and evidence.diverge < len(evidence.ref_ids):
            self._queue_neighbours(tr, src_tokens, diverge, base, focus(evidence, n_src))

    def _queue_neighbours(
        self,
        tr: Traced,
        src_tokens: list[str],
        diverge: int | None,
        base: dict[str, int],
        focus: tuple[int, int] | None,
    ) -> None:
        """Queue the sentence's states for neighbour agreement (searched per part, in ``tables``):
        all of them, or only source position / step ``focus`` (what the blame reads).

        Up to the first divergence step the hypothesis has read the reference's prefix, so its
        decoder state there is the reference-forced state: those steps reuse its neighbours.
        """
        steps, ref, q = tr.decoded.steps, tr.forced, self._agreement
        n_src, n_hyp = len(tr.src_ids), len(steps.token_ids)
        src_sel = np.arange(n_src) if focus is None else np.array([focus[0]])
        enc_q = q.states("encoder", tr.enc_states[src_sel])
        tokens = np.array(src_tokens, dtype=object)[src_sel]
        q.rows("source_tokens", base["source_tokens"] + src_sel, enc_q, [tokens])
        first_own, n_ref, ref_q = self._shared_steps(tr, diverge), 0, np.zeros(0, dtype=np.int64)
        if ref is not None:
            n_ref = len(ref.token_ids)
            ref_sel = np.arange(n_ref) if focus is None else np.array([focus[1]])
            ref_q = q.states("decoder", ref.states[ref_sel])
            ref_tokens = self.tgt_tokens[ref.token_ids[ref_sel]]
            q.rows("reference_steps", base["reference_steps"] + ref_sel, ref_q, [ref_tokens])
            ref_q = dict(zip(ref_sel.tolist(), ref_q.tolist(), strict=True))
        hyp_sel = (
            np.arange(n_hyp) if focus is None else np.array([t for t in focus[1:] if t < n_hyp], dtype=int)
        )
        shared, own = hyp_sel[hyp_sel < first_own], hyp_sel[hyp_sel >= first_own]
        rows = np.concatenate(
            [np.array([ref_q[t] for t in shared], dtype=np.int64), q.states("decoder", steps.states[own])]
        )
        ref_at = np.array(
            [self.tgt_tokens[ref.token_ids[t]] if t < n_ref else None for t in hyp_sel], dtype=object
        )
        labels = [self.tgt_tokens[steps.token_ids[hyp_sel]], ref_at]
        q.rows("target_steps", base["target_steps"] + hyp_sel, rows, labels)

    def _shared_steps(self, tr: Traced, diverge: int | None) -> int:
        """Hypothesis steps whose decoder state is the reference-forced one: up to the first
        divergence the hypothesis has read the reference's prefix (unless a what-if edited the
        attention from an earlier step on)."""
        if tr.forced is None:
            return 0
        n_hyp, n_ref = len(tr.decoded.steps.token_ids), len(tr.forced.token_ids)
        shared = min(n_hyp, n_ref, n_hyp if diverge is None else diverge + 1)
        return shared if self.edited_step is None else min(shared, self.edited_step)

    def _evidence(self, tr: Traced, hyp_seq: list[int], t: int, search: bool, has_unknown: bool) -> Evidence:
        """What the taxonomy (pipeline/errors.py) looks at for a wrong sentence, agreement aside."""
        steps, ref = tr.decoded.steps, tr.forced
        n_src = len(tr.src_ids)
        return Evidence(
            search_error=search,
            diverge=t,
            hyp_ids=hyp_seq,
            ref_ids=ref.token_ids.tolist(),
            ended=tr.decoded.ended,
            topk_at=steps.topk_ids[t].tolist() if t < len(steps.topk_ids) else [],
            hyp_attention=steps.mean_attention[:, :n_src],
            ref_attention=ref.mean_attention[:, :n_src],
            has_unknown=has_unknown,
        )

    def _blame_pending(self, agreement: dict[str, dict[str, np.ndarray]]) -> None:
        """Classify the wrong sentences with the agreement of the states at their divergence step."""
        sents = self.cols["sentences"]
        for p in self._pending:
            enc, dec, rf = agree = divergence_agreement(p, agreement)
            ev = dataclasses.replace(p.evidence, encoder_agreement=enc, decoder_agreement=dec)
            verdict = classify(ev, self.taxonomy, getattr(self.model, "unk_id", None))
            sents["blamed_stage"][p.sentence] = np.asarray([verdict.stage])
            sents["error_tags"][p.sentence] = [list(verdict.tags)]
            for name, value in zip(
                ("nn_encoder_agreement", "nn_decoder_agreement", "nn_reference_agreement"), agree, strict=True
            ):
                sents[name][p.sentence] = np.asarray([value])
        self._pending = []

    def _steps(
        self,
        table: str,
        sid: int,
        ids: np.ndarray,
        logprobs: np.ndarray,
        ent: np.ndarray,
        attn: np.ndarray,
        **extra: np.ndarray,
    ) -> None:
        n = len(ids)
        cols = dict(
            sent_id=np.full(n, sid),
            step=np.arange(n),
            token=self.tgt_tokens[ids],
            token_id=ids,
            is_word_start=np.asarray(self.model.word_starts(list(self.tgt_tokens[ids]), "tgt"), dtype=bool),
            prob=np.exp(logprobs),
            logprob=logprobs,
            entropy=ent,
            attn_argmax_src_pos=attn.argmax(-1),
            attn_entropy=_entropy(attn),
        )
        if "top1_token_id" in extra:
            cols["top1_token"] = self.tgt_tokens[extra["top1_token_id"]]
        self._extend(table, **cols, **extra)

    def _attention(self, sid: int, decoding: str, full: np.ndarray, mean: np.ndarray, n_src: int) -> None:
        blocks = [(mean[:, None, None, :n_src], True)]
        if full.shape[1] * full.shape[2] > 1:
            blocks.append((full[..., :n_src], False))
        for w, is_mean in blocks:
            t, layers, heads, s = w.shape
            step, layer, head, pos = (a.ravel() for a in np.indices(w.shape))
            self._extend(
                "attention",
                sent_id=np.full(w.size, sid),
                decoding=np.full(w.size, decoding, dtype=object),
                step=step,
                src_pos=pos,
                layer=np.full(w.size, -1) if is_mean else layer,
                head=np.full(w.size, -1) if is_mean else head,
                weight=w.ravel(),
            )

    def _vectors_enc(self, sid: int, tokens: list[str], tr: Traced) -> None:
        layers = tr.enc_layers if tr.enc_layers is not None else tr.enc_states[None]
        n_layers, n_src, _ = layers.shape
        first = n_layers - 1 if tr.enc_layers is None else 0
        layer, pos = (a.ravel() for a in np.indices((n_layers, n_src)))
        self._extend(
            "encoder_states",
            sent_id=np.full(layer.size, sid),
            src_pos=pos,
            layer=layer + first,
            token=np.array(tokens, dtype=object)[pos],
            split=np.full(layer.size, self.split, dtype=object),
            vector=layers.reshape(-1, layers.shape[-1]),
        )

    def _vectors_dec(self, sid: int, decoding: str, ids: np.ndarray, states: np.ndarray, shared: int) -> None:
        """Decoder states of one decoding from step ``shared`` on: the hypothesis' first steps are
        the reference's forced decoding's states, stored once (with the 'ref' rows)."""
        inputs = np.concatenate([[self.model.bos_id], ids[:-1]]).astype(np.int64)
        steps = np.arange(shared, len(ids))
        self._extend(
            "decoder_states",
            sent_id=np.full(len(steps), sid),
            decoding=np.full(len(steps), decoding, dtype=object),
            step=steps,
            token=self.tgt_tokens[inputs[steps]],
            next_token=self.tgt_tokens[ids[steps]],
            split=np.full(len(steps), self.split, dtype=object),
            vector=states[steps],
        )

    def tables(self) -> dict[str, pa.Table]:
        """One Arrow table per part table (empty ones included), rows in ``sent_id`` order."""
        agreement = self._agreement.columns({t: self._n[t] for t in AGREEMENT_COLUMNS})
        for table, columns in agreement.items():
            for name, values in columns.items():
                self.cols[table][name] = [values]
        self._blame_pending(agreement)
        return {name: self._table(name, TABLES[name]) for name in PART_TABLES}

    def vectors(self) -> dict[str, pa.Table]:
        """The LanceDB tables of the part (none when vectors are not kept)."""
        if not self.keep_vectors:
            return {}
        found = self.cols.get("decoder_states", {}).get("vector") or self.cols.get("encoder_states", {}).get(
            "vector"
        )
        dim = int(found[0].shape[-1]) if found else 1
        return {
            "encoder_states": self._table("encoder_states", encoder_states_schema(dim, self.vector_dtype)),
            "decoder_states": self._table("decoder_states", decoder_states_schema(dim, self.vector_dtype)),
        }

    def _table(self, name: str, schema: pa.Schema) -> pa.Table:
        cols = self.cols.get(name, {})
        arrays = []
        n_rows = sum(len(v) for v in cols.get("sent_id", []))
        for field in schema:
            if field.name == "parent_id":
                values = np.concatenate(cols[field.name]) if n_rows else np.zeros(0, dtype=np.int64)
                arrays.append(pa.array(values, type=field.type, mask=values < 0))
            elif field.name == "run_id":
                arrays.append(pa.array(np.full(n_rows, self.run_id, dtype=object), type=field.type))
            elif pa.types.is_fixed_size_list(field.type):
                dtype = field.type.value_type.to_pandas_dtype()
                flat = np.concatenate(cols[field.name]).astype(dtype) if n_rows else np.zeros((0, 1), dtype)
                values = pa.array(flat.ravel(), type=field.type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(values, field.type.list_size))
            elif field.name == "error_tags":
                rows = [r for block in cols[field.name] for r in block]
                arrays.append(pa.array(rows, type=field.type))
            elif pa.types.is_list(field.type):
                rows = [r for block in cols[field.name] for r in block]
                arrays.append(_lists(rows, field.type.value_type))
            else:
                values = np.concatenate(cols[field.name]) if n_rows else []
                if (
                    pa.types.is_floating(field.type)
                    or pa.types.is_integer(field.type)
                    or pa.types.is_boolean(field.type)
                ):
                    arrays.append(pa.array(values, type=field.type, from_pandas=True))
                else:
                    arrays.append(pa.array(list(values), type=field.type))
        return pa.Table.from_arrays(arrays, schema=schema)
