"""The one batched beam search, with optional capture of every stage.

Its rules follow Hugging Face ``generate(num_beams=k)`` (the vectorised beam search of
transformers >= 4.50), so the same hypotheses come out for the same model: at each step the
2k best continuations of all beams are ranked; the best k that do not end become the next
beams; those among the first k that end (end-of-sentence or the length limit) compete for
the k finished slots with score ``logprob / length ** length_penalty``; a sentence stops
when no running beam can still beat its worst finished one (``early_stopping``).

With ``trace=True`` it also records, per step and row, the top-k predictions, entropy,
cross-attention and decoder state, and every candidate as a beam-tree node. Tracing only
reads what the search computes anyway: the hypotheses are the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pipeline.models.protocol import AttentionEdit, Encoded, Seq2SeqAdapter, StepOutput
from pipeline.stepstats import entropy, mean_attention
from schemas import ConfigError

NEG = -1.0e9
STATUS_PRUNED, STATUS_KEPT, STATUS_FINISHED, STATUS_ROOT = 0, 1, 2, 3
STATUS_NAMES = ("pruned", "kept", "finished", "root")


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding options (recorded in ``runs.decoding``)."""

    beam: int = 5
    topk: int = 10
    max_len: int = 64  # new tokens, end-of-sentence included
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    per_head: bool = False  # store attention per layer and head, not only the mean
    all_layers: bool = False  # store encoder states of every layer, not only the last
    src_lang: str | None = None  # multilingual models: the tokenizer's source language code
    tgt_lang: str | None = None  # ... and the target language (a forced first or start token)
    decoder_start_token_id: int | None = None  # recorded by trace: the start token the model used
    forced_bos_token_id: int | None = None  # ... and the first token it was forced to write

    def check(self, vocab_size: int) -> DecodeConfig:
        if self.beam < 1:
            raise ConfigError(f"--beam must be at least 1 (got {self.beam})")
        if not 1 <= self.topk <= vocab_size:
            raise ConfigError(
                f"--topk must be between 1 and the vocabulary size {vocab_size} (got {self.topk})"
            )
        if self.max_len < 1:
            raise ConfigError(f"--max-len must be at least 1 (got {self.max_len})")
        return self


@dataclass
class StepTrace:
    """What the model decided at each step of one decoded sequence (``steps`` rows)."""

    token_ids: np.ndarray  # [steps]
    logprobs: np.ndarray  # [steps] of the chosen token
    entropy: np.ndarray  # [steps]
    topk_ids: np.ndarray  # [steps, k]
    topk_logprobs: np.ndarray  # [steps, k]
    attention: np.ndarray  # [steps, layers, heads, src] (layers = heads = 1 for the mean)
    mean_attention: np.ndarray  # [steps, src]
    states: np.ndarray  # [steps, d]


@dataclass
class BeamTree:
    """Every candidate the search ranked, as nodes; node 0 is the root (start token)."""

    parent: np.ndarray  # [nodes] (-1 for the root)
    step: np.ndarray
    token_id: np.ndarray
    token_logprob: np.ndarray
    score: np.ndarray  # cumulative log-probability
    rank: np.ndarray  # rank among the step's 2k candidates
    status: np.ndarray  # STATUS_* codes
    on_best_path: np.ndarray


@dataclass
class Decoded:
    """The best hypothesis of one sentence (and, when traced, how it came about)."""

    ids: list[int]  # without the end-of-sentence token
    ended: bool  # finished with end-of-sentence (not cut by max_len)
    logprob: float
    score: float
    steps: StepTrace | None = None
    tree: BeamTree | None = None


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    """``t`` [batch, n, ...] gathered along dim 1 by ``idx`` [batch, m]."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


@dataclass
class _Finished:
    """The k best finished hypotheses of each sentence so far ([batch, k] each)."""

    seqs: Tensor  # [batch, k, max_len]
    scores: Tensor  # length-normalised
    logprob: Tensor
    length: Tensor
    flag: Tensor  # a real finished hypothesis (not an empty slot)

    @classmethod
    def empty(cls, b: int, k: int, max_len: int, pad_id: int, dev: torch.device) -> _Finished:
        return cls(
            seqs=torch.full((b, k, max_len), pad_id, dtype=torch.long, device=dev),
            scores=torch.full((b, k), NEG, device=dev),
            logprob=torch.zeros(b, k, device=dev),
            length=torch.zeros(b, k, dtype=torch.long, device=dev),
            flag=torch.zeros(b, k, dtype=torch.bool, device=dev),
        )

    def merge(self, norm: Tensor, seqs: Tensor, scores: Tensor, just: Tensor, t: int) -> Tensor:
        """Let the candidates that end at step ``t`` (``norm``: their normalised scores, NEG for
        the others) compete for the k slots; returns which of slots + candidates were picked."""
        merged = torch.cat([self.scores, norm], dim=1)
        pick = torch.topk(merged, self.scores.shape[1], dim=1).indices
        self.scores = _gather(merged, pick)
        self.seqs = _gather(torch.cat([self.seqs, seqs], dim=1), pick)
        self.logprob = _gather(torch.cat([self.logprob, scores], dim=1), pick)
        self.length = _gather(
            torch.cat([self.length, torch.full_like(just, t + 1, dtype=torch.long)], 1), pick
        )
        self.flag = _gather(torch.cat([self.flag, just], dim=1), pick)
        return pick

    def best(self, eos_id: int) -> list[Decoded]:
        """Each sentence's best finished hypothesis (end of sentence stripped)."""
        ids, lens = self.seqs[:, 0].tolist(), self.length[:, 0].tolist()
        results = []
        for i, (row, n) in enumerate(zip(ids, lens, strict=True)):
            seq = row[:n]
            ended = bool(seq) and seq[-1] == eos_id
            results.append(
                Decoded(
                    ids=seq[:-1] if ended else seq,
                    ended=ended,
                    logprob=float(self.logprob[i, 0]),
                    score=float(self.scores[i, 0]),
                )
            )
        return results


def _step_logprobs(
    model: Seq2SeqAdapter, out: StepOutput, prefix: Tensor, t: int, cfg: DecodeConfig, forced: Tensor | None
) -> Tensor:
    """The step's log-probabilities under the model's own rules (and a forced prefix's token)."""
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)
    logprobs = model.adjust_logprobs(logprobs, t, prefix=prefix, max_len=cfg.max_len)
    return _force(logprobs, forced[:, t]) if forced is not None else logprobs


def beam_search(
    model: Seq2SeqAdapter,
    enc: Encoded,
    cfg: DecodeConfig,
    *,
    trace: bool = True,
    prefixes: Sequence[Sequence[int]] | None = None,
    edit: AttentionEdit | None = None,
) -> list[Decoded]:
    """Decode every sentence of ``enc``; ``prefixes`` force the first tokens of each output.

    Each step ranks 2k candidates per sentence: the k best that do not end run on; those among
    the first k that end compete with the finished hypotheses (``_Finished``), as ``generate`` does.
    """
    b, k, v = enc.states.shape[0], cfg.beam, model.vocab_size
    dev = enc.states.device
    rows = torch.arange(b, device=dev)[:, None] * k
    top_mask = torch.arange(2 * k, device=dev) < k
    forced = _prefix_tensor(prefixes, b, k, cfg.max_len, dev)

    tokens = torch.full((b * k,), model.bos_id, dtype=torch.long, device=dev)
    start = tokens[:, None]
    run_scores = torch.zeros(b, k, device=dev)
    run_scores[:, 1:] = NEG
    run_seqs = torch.full((b, k, cfg.max_len), model.pad_id, dtype=torch.long, device=dev)
    fin = _Finished.empty(b, k, cfg.max_len, model.pad_id, dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    cache = model.start(enc, k)
    rec = _Recorder(b, k, cfg, model.bos_id) if trace else None

    for t in range(cfg.max_len):
        out = model.step(enc, tokens, cache, edit if edit is not None and edit.step == t else None)
        if edit is not None and t == 0:
            edit.check(*out.cross_attention.shape[1:3])  # [rows, layers, heads, src]
        prefix = torch.cat([start, run_seqs[:, :, :t].reshape(b * k, t)], dim=1)  # [rows, t + 1]
        logprobs = _step_logprobs(model, out, prefix, t, cfg, forced)
        if rec is not None:
            rec.step(logprobs, out.cross_attention, out.state)
        acc = (logprobs.view(b, k, v) + run_scores[:, :, None]).view(b, k * v)
        cand_scores, cand_idx = torch.topk(acc, 2 * k, dim=1)
        cand_beam, cand_tok = cand_idx // v, cand_idx % v
        cand_seqs = _gather(run_seqs, cand_beam)
        cand_seqs[:, :, t] = cand_tok
        ends = (cand_tok == model.eos_id) | (t + 1 == cfg.max_len)

        # the k best continuations that do not end run on
        running = cand_scores + ends.float() * NEG
        keep = torch.topk(running, k, dim=1).indices
        run_scores, run_seqs = _gather(running, keep), _gather(cand_seqs, keep)

        # the ending ones among the first k compete for the finished slots
        just = ends & top_mask[None, :]
        norm = cand_scores / float(t + 1) ** cfg.length_penalty
        norm = norm + (~just).float() * NEG + (~active)[:, None].float() * NEG
        if cfg.early_stopping is True:
            norm = norm + fin.flag.all(1, keepdim=True).float() * NEG
        pick = fin.merge(norm, cand_seqs, cand_scores, just, t)

        if rec is not None:
            cand_lp = logprobs.view(b, k * v).gather(1, cand_idx)
            rec.candidates(active, cand_beam, cand_tok, cand_lp, cand_scores, keep, ends, norm, pick)
        tokens = _gather(cand_tok, keep).flatten()
        cache = model.reorder(out.cache, (rows + _gather(cand_beam, keep)).flatten())

        active = active & _can_improve(run_scores, fin.scores, fin.flag, t + 1, cfg)
        if t + 1 == cfg.max_len or not bool(active.any()):
            break
        if cfg.early_stopping is True and bool(fin.flag.all()):
            break

    results = fin.best(model.eos_id)
    if rec is not None:
        rec.finish(results)
    return results


def _prefix_tensor(
    prefixes: Sequence[Sequence[int]] | None, b: int, k: int, max_len: int, dev: torch.device
) -> Tensor | None:
    """[rows, max_len] forced token per step (-1 = free), or None."""
    if not prefixes or not any(prefixes):
        return None
    forced = torch.full((b, max_len), -1, dtype=torch.long)
    for i, p in enumerate(prefixes):
        p = list(p)[:max_len]
        forced[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    return forced.repeat_interleave(k, dim=0).to(dev)


def _force(logprobs: Tensor, token: Tensor) -> Tensor:
    """Rows with ``token`` >= 0 keep only that token's log-probability."""
    rows = token >= 0
    if not bool(rows.any()):
        return logprobs
    keep = torch.full_like(logprobs, float("-inf"))
    idx = token.clamp_min(0).unsqueeze(1)
    keep.scatter_(1, idx, logprobs.gather(1, idx))
    return torch.where(rows[:, None], keep, logprobs)


def _can_improve(
    run_scores: Tensor, fin_scores: Tensor, fin_flag: Tensor, length: int, cfg: DecodeConfig
) -> Tensor:
    """[batch] whether a running beam may still beat the worst finished hypothesis."""
    best_len = cfg.max_len if cfg.early_stopping == "never" and cfg.length_penalty > 0 else length
    best_running = run_scores[:, :1] / float(best_len) ** cfg.length_penalty
    worst = torch.where(fin_flag, fin_scores.min(1, keepdim=True).values, NEG)
    return (best_running > worst).any(1)


class _Recorder:
    """Keeps what a traced search saw, on the device, and turns it into per-sentence traces."""

    def __init__(self, b: int, k: int, cfg: DecodeConfig, bos_id: int) -> None:
        self.b, self.k, self.cfg, self.bos_id = b, k, cfg, bos_id
        self.per_step: list[tuple[Tensor, ...]] = []
        self.cands: list[tuple[Tensor, ...]] = []

    def step(self, logprobs: Tensor, attn: Tensor, state: Tensor) -> None:
        top_lp, top_ids = torch.topk(logprobs, self.cfg.topk, dim=-1)
        mean = mean_attention(attn)
        full = attn if self.cfg.per_head else mean[:, None, None, :]
        self.per_step.append((top_ids, top_lp, entropy(logprobs), full, mean, state))

    def candidates(self, *tensors: Tensor) -> None:
        self.cands.append(tensors)

    def finish(self, results: list[Decoded]) -> None:
        """Attach each sentence's beam tree and the step records along its best path."""
        steps = [torch.stack(s).cpu() for s in zip(*self.per_step, strict=True)]  # [T, rows, ...]
        np_steps = [s.float().numpy() if s.is_floating_point() else s.numpy() for s in steps]
        for i, (res, (tree, path_beams)) in enumerate(zip(results, self._trees(), strict=True)):
            res.tree = tree
            on_path = tree.on_best_path & (tree.step > 0)
            ts = np.arange(len(path_beams))
            rows = i * self.k + np.asarray(path_beams, dtype=np.int64)
            top_ids, top_lp, ent, full, mean, state = (s[ts, rows] for s in np_steps)
            res.steps = StepTrace(
                tree.token_id[on_path], tree.token_logprob[on_path], ent, top_ids, top_lp, full, mean, state
            )

    def _trees(self) -> list[tuple[BeamTree, list[int]]]:
        """Number the candidates as nodes, link parents, mark best paths (numpy, per step)."""
        b, k = self.b, self.k
        n_cand = 2 * k
        names = ("sent", "id", "parent", "step", "tok", "lp", "score", "rank", "status", "beam")
        cols: dict[str, list[np.ndarray]] = {c: [] for c in names}
        count = np.ones(b, dtype=np.int64)  # node 0 is the root
        run_node = np.zeros((b, k), dtype=np.int64)
        fin_node = np.full((b, k), -1, dtype=np.int64)
        sent = np.broadcast_to(np.arange(b)[:, None], (b, n_cand))
        rank = np.broadcast_to(np.arange(n_cand)[None, :], (b, n_cand))
        for t, c in enumerate(self.cands):
            active, beam, tok, lp, score, keep, ends, norm, pick = (x.cpu().numpy() for x in c)
            ids = count[:, None] + np.arange(n_cand)[None, :]
            status = np.full((b, n_cand), STATUS_PRUNED, dtype=np.int8)
            kept = np.zeros((b, n_cand), dtype=bool)
            np.put_along_axis(kept, keep, True, 1)
            status[kept & ~ends] = STATUS_KEPT
            entered = np.zeros((b, 3 * k), dtype=bool)
            np.put_along_axis(entered, pick, True, 1)
            status[entered[:, k:] & (norm > NEG / 2)] = STATUS_FINISHED
            real = active[:, None] & (score > NEG / 2)
            parent = np.take_along_axis(run_node, beam, 1)
            step = np.full((b, n_cand), t + 1, dtype=np.int32)
            for name, arr in zip(
                names, (sent, ids, parent, step, tok, lp, score, rank, status, beam), strict=True
            ):
                cols[name].append(arr[real])
            fin_node = np.take_along_axis(np.concatenate([fin_node, ids], 1), pick, 1)
            run_node = np.take_along_axis(ids, keep, 1)
            count = count + np.where(active, n_cand, 0)
        flat = {name: np.concatenate(v) for name, v in cols.items()}
        out = []
        for i in range(b):
            sel = flat["sent"] == i
            node_id = flat["id"][sel]
            tree = _empty_tree(int(count[i]), self.bos_id)
            for field, name in (
                ("parent", "parent"),
                ("step", "step"),
                ("token_id", "tok"),
                ("token_logprob", "lp"),
                ("score", "score"),
                ("rank", "rank"),
                ("status", "status"),
            ):
                getattr(tree, field)[node_id] = flat[name][sel]
            beam_of = np.zeros(int(count[i]), dtype=np.int64)
            beam_of[node_id] = flat["beam"][sel]
            path, node = [], int(fin_node[i, 0])
            while node > 0:
                tree.on_best_path[node] = True
                path.append(int(beam_of[node]))
                node = int(tree.parent[node])
            present = np.zeros(int(count[i]), dtype=bool)
            present[0] = True
            present[node_id] = True
            out.append((_subset(tree, present), path[::-1]))
        return out


def _empty_tree(n: int, bos_id: int) -> BeamTree:
    """``n`` nodes; node 0 is the root: the start token, on every best path."""
    tree = BeamTree(
        parent=np.full(n, -1, dtype=np.int64),
        step=np.zeros(n, dtype=np.int32),
        token_id=np.full(n, bos_id, dtype=np.int64),
        token_logprob=np.zeros(n, dtype=np.float32),
        score=np.zeros(n, dtype=np.float32),
        rank=np.zeros(n, dtype=np.int32),
        status=np.full(n, STATUS_ROOT, dtype=np.int8),
        on_best_path=np.zeros(n, dtype=bool),
    )
    tree.on_best_path[0] = True
    return tree


def _subset(tree: BeamTree, keep: np.ndarray) -> BeamTree:
    """Drop node ids that were never filled (candidates with impossible scores)."""
    if keep.all():
        return tree
    new_id = np.cumsum(keep) - 1
    parent = np.where(tree.parent[keep] >= 0, new_id[np.maximum(tree.parent[keep], 0)], -1)
    return BeamTree(
        parent,
        *(
            getattr(tree, f)[keep]
            for f in ("step", "token_id", "token_logprob", "score", "rank", "status", "on_best_path")
        ),
    )
