"""One part of a run: the traced sentences, in ``sent_id`` order, turned into every table.

``PartBuilder.add`` takes one sentence's trace and asks each stage's module for the columns it
owns (``encoder``, ``decoder``, ``attention``, ``prediction``, ``search``); the sentence's outcome
(scores, first divergence) and its blame (``pipeline.taxonomy``, with neighbour agreement searched
once per part) are decided here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.agreement import AGREEMENT_COLUMNS, AgreementQueue, PendingBlame, divergence_agreement, focus
from pipeline.beam import Decoded
from pipeline.corpus import Example
from pipeline.forced import ForcedTrace
from pipeline.metrics import first_divergence, sentence_scores
from pipeline.models.protocol import Seq2SeqAdapter
from pipeline.neighbours import TrainingStates
from pipeline.records import attention, decoder, encoder, prediction, search
from pipeline.records.columns import Columns
from pipeline.taxonomy import Evidence, Taxonomy, Verdict, attention_signals, classify
from schemas import PART_TABLES, TABLES, decoder_states_schema, encoder_states_schema

AGREEMENT_NAMES = (
    "nn_encoder_agreement",
    "nn_decoder_agreement",
    "nn_reference_agreement",
    "nn_encoder_min_agreement",
    "nn_attention_agreement",
)
ATTENTION_SIGNALS = ("attn_entropy_at_divergence", "attn_coverage_at_divergence")


@dataclass
class Traced:
    """Everything recorded for one sentence."""

    example: Example
    src_ids: list[int]
    decoded: Decoded
    forced: ForcedTrace | None
    enc_states: np.ndarray  # [src, d] last layer
    enc_layers: np.ndarray | None  # [layers, src, d]


@dataclass(frozen=True)
class Outcome:
    """How one sentence's hypothesis compares with its reference."""

    hypothesis: str
    hyp_seq: list[int]  # end-of-sentence included when the hypothesis ended
    exact: bool | None
    diverge: int | None  # first divergence step


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
        attention_keep: attention.AttentionKeep | None = None,
    ) -> None:
        """``edited_step``: a what-if edited the attention from that step on, so the hypothesis'
        decoder states there are its own even where its prefix is the reference's.
        ``agreement``: which states get neighbour agreement (``pipeline.agreement.AGREEMENT_MODES``).
        ``attention_keep``: which positions of each attention row are stored."""
        self.keep = attention_keep or attention.AttentionKeep()
        self.model, self.run_id, self.split = model, run_id, split
        self.edited_step, self.agreement, self.vector_dtype = edited_step, agreement, vector_dtype
        self.taxonomy, self.training, self.keep_vectors = taxonomy or Taxonomy(), training, keep_vectors
        self.tgt_tokens = np.array(model.tgt_pieces(list(range(model.vocab_size))), dtype=object)
        self.cols = Columns()
        self._agreement = AgreementQueue(training, self.taxonomy.neighbours)  # searched per part
        self._pending: list[PendingBlame] = []  # wrong sentences waiting for their agreement

    def _rows(self, table: str, sid: int, columns: dict[str, np.ndarray], **fixed: object) -> None:
        """Add a block of rows of one sentence (``fixed``: columns with one value for every row)."""
        n = len(next(iter(columns.values())))
        full = {k: np.full(n, v, dtype=object if isinstance(v, str) else None) for k, v in fixed.items()}
        self.cols.extend(table, sent_id=np.full(n, sid), **full, **columns)

    def skip(self, ex: Example, reason: str) -> None:
        self.cols.extend("skipped", sent_id=[ex.sent_id], file=[ex.file], line=[ex.line], reason=[reason])

    def add(self, tr: Traced) -> None:
        """Every table's rows of one traced sentence."""
        dec, ref, sid = tr.decoded, tr.forced, tr.example.sent_id
        assert dec.steps is not None and dec.tree is not None, "records need a traced decode"
        out = self._outcome(tr)
        src_tokens = self.model.src_pieces(tr.src_ids)
        source = encoder.source_token_columns(self.model, tr.src_ids, src_tokens)
        base = {t: self.cols.rows[t] for t in AGREEMENT_COLUMNS}  # the sentence's first row per table
        evidence = self._blame_or_queue(tr, out, bool(source["is_unknown"].any()), base)
        n_src = len(tr.src_ids)
        hyp_mean = dec.steps.mean_attention[:, :n_src]
        self._rows("source_tokens", sid, {**source, **attention.source_columns(hyp_mean)})
        hyp_cols = prediction.hypothesis_columns(self.model, self.tgt_tokens, dec.steps)
        self._rows("target_steps", sid, {**hyp_cols, **attention.step_columns(hyp_mean, self.keep)})
        self._attention(sid, "hyp", dec.steps.attention[..., :n_src], hyp_mean)
        self._rows("beam_nodes", sid, search.beam_node_rows(dec.tree, self.tgt_tokens))
        rows = encoder.encoder_state_rows(src_tokens, tr.enc_states, tr.enc_layers, self.split)
        self._rows("encoder_states", sid, rows)
        n_ref = None if ref is None else len(ref.token_ids)
        first = decoder.shared_steps(len(dec.steps.token_ids), n_ref, out.diverge, self.edited_step)
        self._decoder_states(sid, "hyp", dec.steps.token_ids, dec.steps.states, first)
        if ref is not None:
            ref_mean = ref.mean_attention[:, :n_src]
            ref_cols = prediction.reference_columns(self.model, self.tgt_tokens, ref)
            self._rows("reference_steps", sid, {**ref_cols, **attention.step_columns(ref_mean, self.keep)})
            self._attention(sid, "ref", ref.attention[..., :n_src], ref_mean)
            self._decoder_states(sid, "ref", ref.token_ids, ref.states, 0)
        if self.training is not None and self.agreement == "all":
            self._queue_neighbours(tr, src_tokens, first, base, None)
        elif self.training is not None and evidence is not None and evidence.diverge < len(evidence.ref_ids):
            self._queue_neighbours(tr, src_tokens, first, base, focus(evidence, n_src))

    def _outcome(self, tr: Traced) -> Outcome:
        dec, ref, ex = tr.decoded, tr.forced, tr.example
        hypothesis = self.model.detokenize(dec.ids)
        hyp_seq = [*dec.ids, self.model.eos_id] if dec.ended else list(dec.ids)
        exact = None if ex.reference is None else hypothesis == ex.reference
        diverge = None if ref is None else first_divergence(hyp_seq, ref.token_ids.tolist())
        return Outcome(hypothesis, hyp_seq, exact, diverge)

    def _blame_or_queue(
        self, tr: Traced, out: Outcome, has_unknown: bool, base: dict[str, int]
    ) -> Evidence | None:
        """The ``sentences`` row; a wrong sentence is blamed now (no training run) or once its
        neighbour agreement is searched (``tables``). Returns the wrong sentence's evidence."""
        dec, ref, ex = tr.decoded, tr.forced, tr.example
        searched = search.sentence_columns(dec, ref, out.exact)
        verdict, evidence = None, None
        if ref is not None and not out.exact and out.diverge is not None:
            evidence = self._evidence(tr, out, bool(searched["is_search_error"][0]), has_unknown)
            if self.training is None:
                verdict = self._classify(evidence)
            else:
                self._pending.append(PendingBlame(self.cols.rows["sentences"], evidence, base))
        scores = None if ex.reference is None else sentence_scores(out.hypothesis, ex.reference)
        self.cols.extend(
            "sentences",
            sent_id=[ex.sent_id],
            split=[self.split],
            source=[ex.source],
            reference=[ex.reference],
            hypothesis=[out.hypothesis],
            src_len=[len(tr.src_ids)],
            ref_len=[None if ref is None else len(ref.token_ids)],
            hyp_len=[len(out.hyp_seq)],
            exact_match=[out.exact],
            first_divergence_step=[out.diverge],
            bleu=[None if scores is None else scores.bleu],
            chrf=[None if scores is None else scores.chrf],
            ter=[None if scores is None else scores.ter],
            blamed_stage=[None if verdict is None else verdict.stage],
            **{name: [None] for name in AGREEMENT_NAMES},
            **searched,
        )
        blocks = self.cols.blocks["sentences"]
        blocks["error_tags"].append([None if verdict is None else list(verdict.tags)])
        signals = (np.nan, np.nan) if evidence is None else attention_signals(evidence)  # NaN: null
        for name, value in zip(ATTENTION_SIGNALS, signals, strict=True):
            blocks[name].append(np.asarray([value], dtype=np.float32))
        return evidence

    def _classify(self, evidence: Evidence) -> Verdict:
        return classify(evidence, self.taxonomy, getattr(self.model, "unk_id", None))

    def _evidence(self, tr: Traced, out: Outcome, search_error: bool, has_unknown: bool) -> Evidence:
        """What the taxonomy looks at for a wrong sentence, agreement aside."""
        steps, ref, t = tr.decoded.steps, tr.forced, out.diverge
        n_src = len(tr.src_ids)
        return Evidence(
            search_error=search_error,
            diverge=t,
            hyp_ids=out.hyp_seq,
            ref_ids=ref.token_ids.tolist(),
            ended=tr.decoded.ended,
            topk_at=steps.topk_ids[t].tolist() if t < len(steps.topk_ids) else [],
            hyp_attention=steps.mean_attention[:, :n_src],
            ref_attention=ref.mean_attention[:, :n_src],
            has_unknown=has_unknown,
        )

    def _attention(self, sid: int, decoding: str, full: np.ndarray, mean: np.ndarray) -> None:
        for block in attention.attention_rows(full, mean, self.keep):
            self._rows("attention", sid, block, decoding=decoding)

    def _decoder_states(
        self, sid: int, decoding: str, ids: np.ndarray, states: np.ndarray, first: int
    ) -> None:
        rows = decoder.decoder_state_rows(self.tgt_tokens, self.model.bos_id, ids, states, first, self.split)
        self._rows("decoder_states", sid, rows, decoding=decoding)

    def _queue_neighbours(
        self,
        tr: Traced,
        src_tokens: list[str],
        first_own: int,
        base: dict[str, int],
        focus: tuple[int, int] | None,
    ) -> None:
        """Queue the sentence's states for neighbour agreement (searched per part, in ``tables``):
        all of them, or only source position / step ``focus`` (what the blame reads).

        Before step ``first_own`` the hypothesis has read the reference's prefix, so its decoder
        state there is the reference-forced state: those steps reuse its neighbours.
        """
        steps, ref, q = tr.decoded.steps, tr.forced, self._agreement
        n_src, n_hyp = len(tr.src_ids), len(steps.token_ids)
        src_sel = np.arange(n_src)  # the encoder rule reads every source token's state
        enc_q = q.states("encoder", tr.enc_states[src_sel])
        tokens = np.array(src_tokens, dtype=object)[src_sel]
        q.rows("source_tokens", base["source_tokens"] + src_sel, enc_q, [tokens])
        n_ref, ref_q = 0, {}
        if ref is not None:
            n_ref = len(ref.token_ids)
            ref_sel = np.arange(n_ref) if focus is None else np.array([focus[1]])
            found = q.states("decoder", ref.states[ref_sel])
            ref_tokens = self.tgt_tokens[ref.token_ids[ref_sel]]
            q.rows("reference_steps", base["reference_steps"] + ref_sel, found, [ref_tokens])
            ref_q = dict(zip(ref_sel.tolist(), found.tolist(), strict=True))
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
        attended = np.array(src_tokens, dtype=object)[steps.mean_attention[hyp_sel, :n_src].argmax(-1)]
        labels = [self.tgt_tokens[steps.token_ids[hyp_sel]], ref_at, attended]
        q.rows("target_steps", base["target_steps"] + hyp_sel, rows, labels)

    def _blame_pending(self, agreement: dict[str, dict[str, np.ndarray]]) -> None:
        """Classify the wrong sentences with the agreement of the states at their divergence step."""
        sents = self.cols.blocks["sentences"]
        for p in self._pending:
            enc, dec, _, enc_min, att = agree = divergence_agreement(p, agreement)
            evidence = dataclasses.replace(
                p.evidence,
                encoder_agreement=enc,
                decoder_agreement=dec,
                encoder_min_agreement=enc_min,
                attention_agreement=att,
            )
            verdict = self._classify(evidence)
            sents["blamed_stage"][p.sentence] = np.asarray([verdict.stage])
            sents["error_tags"][p.sentence] = [list(verdict.tags)]
            for name, value in zip(AGREEMENT_NAMES, agree, strict=True):
                sents[name][p.sentence] = np.asarray([value])
        self._pending = []

    def tables(self) -> dict[str, pa.Table]:
        """One Arrow table per part table (empty ones included), rows in ``sent_id`` order."""
        agreement = self._agreement.columns({t: self.cols.rows[t] for t in AGREEMENT_COLUMNS})
        for table, columns in agreement.items():
            for name, values in columns.items():
                self.cols.blocks[table][name] = [values]
        self._blame_pending(agreement)
        return {name: self.cols.table(name, TABLES[name], self.run_id) for name in PART_TABLES}

    def vectors(self) -> dict[str, pa.Table]:
        """The LanceDB tables of the part (none when vectors are not kept)."""
        if not self.keep_vectors:
            return {}
        blocks = self.cols.blocks
        found = blocks.get("decoder_states", {}).get("vector") or blocks.get("encoder_states", {}).get(
            "vector"
        )
        dim = int(found[0].shape[-1]) if found else 1
        schemas = {
            "encoder_states": encoder_states_schema(dim, self.vector_dtype),
            "decoder_states": decoder_states_schema(dim, self.vector_dtype),
        }
        return {name: self.cols.table(name, schema, self.run_id) for name, schema in schemas.items()}
