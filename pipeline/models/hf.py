"""Hugging Face encoder-decoders (``FAMILIES``: Marian, T5, BART, NLLB, ...) behind the adapter protocol.

The model is loaded from a local directory only (``local_files_only``; nothing is downloaded) and
run through its own modules: every decoder step is one ``model(...)`` call with the Hugging Face
cache, ``output_attentions`` (cross-attention) and ``output_hidden_states`` (the decoder state
``lm_head`` reads). The decoding rules are the logits processors ``generate()`` builds from the
model's ``generation_config.json``; beam width, length penalty, length limit and early stopping
come from beamscope's own ``DecodeConfig``. With both, ``beam_search`` returns the hypotheses and
scores of ``model.generate(num_beams=k, do_sample=False)``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutput

from pipeline.models import hf_edits
from pipeline.models.builtin import file_hash
from pipeline.models.hf_compat import cache_keyword, check_version, logits_processors
from pipeline.models.hf_families import (
    FAMILIES,
    FULL_PASS_INPUT_IDS,
    REFUSED,
    STEPWISE_FORCED,
    input_embeddings,
    output_layer,
    predicting,
    word_marks,
    word_starts,
)
from pipeline.models.hf_languages import LanguageToken, multilingual, set_language
from pipeline.models.protocol import Edit, Encoded, ForcedOutput, StepOutput
from schemas import CheckpointError, ConfigError

WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "source.spm",
    "spiece.model",
    "vocab.json",
    "sentencepiece.bpe.model",
    "vocab-src.json",  # FSMT
    "prophetnet.tokenizer",
)
UNSUPPORTED = {  # generation settings whose processors need each row's source ids or a second model pass
    "encoder_repetition_penalty": (None, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "guidance_scale": (None, 1.0),
}


@dataclass
class HFCache:
    """Decoder rows: encoder output repeated per beam row, and the Hugging Face key/value cache."""

    states: Tensor  # [rows, src, d]
    mask: Tensor  # [rows, src] 1 at real tokens
    kv: Any = None  # EncoderDecoderCache once the first step ran


class HFModel:
    """A local ``AutoModelForSeq2SeqLM`` with its tokenizer; implements ``Seq2SeqAdapter``."""

    def __init__(self, name: str, model: Any, tokenizer: Any) -> None:
        self.name, self.net, self.tokenizer = name, model, tokenizer
        config = model.config
        self.generation = gen = copy.deepcopy(model.generation_config)  # with_languages changes a copy
        self.arch = f"hf-{config.model_type}"
        self.bos_id = _first(gen.decoder_start_token_id, config.decoder_start_token_id, config.pad_token_id)
        self.eos_id = _single_eos(gen.eos_token_id if gen.eos_token_id is not None else config.eos_token_id)
        self.pad_id = _first(gen.pad_token_id, config.pad_token_id, self.eos_id)
        self.unk_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else -1
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.src_vocab_size = len(tokenizer)
        self.max_src_len = _max_src_len(config, tokenizer)
        self.path: Path | None = None
        self.hash = ""
        self._processors: dict[int, Any] = {}
        self._banned = _static_bans(gen, self.eos_id)
        self._cache_kw = cache_keyword(model)
        self._edits: bool | None = None  # whether attention edits reach the model (probed on first use)
        self._marks = word_marks(tokenizer)
        self.languages = (tokenizer.src_lang if multilingual(tokenizer) else None, None)  # (source, target)
        self._tgt_mark: LanguageToken | None = None

    @property
    def device(self) -> torch.device:
        return self.net.device

    def to(self, device: torch.device) -> HFModel:
        self.net.to(device)
        return self

    # -- tokens -------------------------------------------------------------------------------

    def src_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def src_pieces(self, ids: list[int]) -> list[str]:
        return self._pieces(ids)

    def tgt_ids(self, text: str) -> list[int]:
        """The reference's ids as decoding produces them: no end token, the forced first token first
        (a target-language code at the end, mBART-25's, is the decoder's start token instead)."""
        ids = list(self.tokenizer(text_target=text)["input_ids"])
        if self._tgt_mark is not None and not self._tgt_mark.first and ids and ids[-1] == self._tgt_mark.id:
            ids = ids[:-1]
        ids = ids[:-1] if ids and ids[-1] == self.eos_id else ids
        forced = self.forced_bos_id
        return [forced, *ids] if forced is not None and ids[:1] != [forced] else ids

    @property
    def forced_bos_id(self) -> int | None:
        """The token ``generate`` forces at the first step (BART's <s>, a target language), if any."""
        forced = self.generation.forced_bos_token_id
        return None if forced is None else int(forced)

    def with_languages(self, src_lang: str | None, tgt_lang: str | None) -> HFModel:
        """This model reading ``src_lang`` sources and writing ``tgt_lang`` (None: as configured), as
        a copy (model weights shared). The target language becomes the forced first token, or the
        decoder's start token where the tokenizer marks targets at their end (mBART-25)."""
        where = str(self.path or self.name)
        if not multilingual(self.tokenizer):
            raise ConfigError(
                f"--src-lang/--tgt-lang: model_type {self.net.config.model_type!r} in {where} takes no "
                "language codes (multilingual families: mbart, m2m_100/NLLB)"
            )
        new = copy.copy(self)
        new.tokenizer, new.generation, new._processors = (
            copy.deepcopy(self.tokenizer),
            copy.deepcopy(self.generation),
            {},
        )
        if src_lang is not None:
            set_language(new.tokenizer, src_lang, "source", where)
        if tgt_lang is not None:
            new._tgt_mark = mark = set_language(new.tokenizer, tgt_lang, "target", where)
            if mark.first:
                new.generation.forced_bos_token_id = mark.id
            else:
                new.generation.decoder_start_token_id = new.bos_id = mark.id
        new.languages = (new.tokenizer.src_lang, tgt_lang if tgt_lang is not None else self.languages[1])
        return new

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return self._pieces(ids)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def word_starts(self, pieces: list[str], side: str = "tgt") -> list[bool]:
        """Whether each piece begins a word: it is special or follows one, or its tokenizer marks it so
        (a ``▁``/``Ġ`` word start, no ``##`` word-piece continuation, the previous piece's ``</w>``)."""
        return word_starts(pieces, set(self.tokenizer.all_special_tokens), self._marks)

    def _pieces(self, ids: list[int]) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(list(ids))
        return [t if t is not None else f"<id:{i}>" for i, t in zip(ids, tokens, strict=True)]

    # -- model --------------------------------------------------------------------------------

    def encode(self, src: Tensor, mask: Tensor, all_layers: bool = False) -> Encoded:
        out = self.net.get_encoder()(
            input_ids=src, attention_mask=mask.long(), output_hidden_states=all_layers, return_dict=True
        )
        layers = torch.stack(out.hidden_states[1:], dim=1) if all_layers else None  # [b, layers, src, d]
        return Encoded(states=out.last_hidden_state, mask=mask, layer_states=layers)

    def start(self, enc: Encoded, beam: int) -> HFCache:
        states = enc.states.repeat_interleave(beam, dim=0)
        return HFCache(states, enc.mask.long().repeat_interleave(beam, dim=0))

    @torch.no_grad()
    def step(self, enc: Encoded, tokens: Tensor, cache: HFCache, edit: Edit | None = None) -> StepOutput:
        if edit is not None:
            self._check_edits()
        with hf_edits.editing(edit):
            out = self._forward(cache.states, cache.mask, tokens[:, None], cache.kv)
        cache.kv = getattr(out, self._cache_kw)
        attention, states = predicting(out, 1)
        return StepOutput(out.logits[:, -1], attention[:, 0], states[:, 0], cache)

    def _check_edits(self) -> None:
        """A ConfigError unless attention edits reach this model (probed once)."""
        if self._edits is None:
            with torch.no_grad():
                self._edits = hf_edits.reaches(self.net, self._probe_step)
        if not self._edits:
            kind = self.net.config.model_type
            raise ConfigError(f"attention edits do not reach the cross-attention of model_type {kind!r}")

    def _probe_step(self) -> Tensor | None:
        """Every layer's cross-attention weights of one decoder step over a three-token source."""
        mask = torch.ones(1, 3, dtype=torch.bool, device=self.device)
        states = self.encode(torch.full((1, 3), self.eos_id, device=self.device), mask).states
        tokens = torch.tensor([[self.bos_id]], device=self.device)
        found = self._forward(states, mask.long(), tokens, None, use_cache=False).cross_attentions
        return torch.stack(found) if found and all(a is not None for a in found) else None

    def reorder(self, cache: HFCache, rows: Tensor) -> HFCache:
        """``EncoderDecoderCache.reorder_cache`` for the decoder's self-attention. The cross-attention
        keys/values and the encoder output stay: they are the same for every row of a sentence, and
        rows only move within their sentence (see the protocol), so reordering them changes nothing."""
        if cache.kv is not None:
            cache.kv.self_attention_cache.reorder_cache(rows)
        return cache

    def forced(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        if self.arch in STEPWISE_FORCED:
            return self._forced_by_steps(enc, tgt_in)
        out = self._forward(enc.states, enc.mask.long(), tgt_in, None, use_cache=False)
        attention, states = predicting(out, tgt_in.shape[1])
        return ForcedOutput(out.logits, attention, states)

    def _forced_by_steps(self, enc: Encoded, tgt_in: Tensor) -> ForcedOutput:
        """Forced decoding one step at a time with the cache, as generation runs (gradients kept)."""
        kv, outs = None, []
        for t in range(tgt_in.shape[1]):
            out = self._forward(enc.states, enc.mask.long(), tgt_in[:, t : t + 1], kv)
            kv = getattr(out, self._cache_kw)
            outs.append((out.logits, *predicting(out, 1)))
        logits, attention, states = (torch.cat(parts, dim=1) for parts in zip(*outs, strict=True))
        return ForcedOutput(logits, attention, states)

    def _forward(self, states: Tensor, mask: Tensor, tgt: Tensor, kv: Any, use_cache: bool = True) -> Any:
        extra = {"input_ids": mask} if self.arch in FULL_PASS_INPUT_IDS and not use_cache else {}
        return self.net(
            **extra,
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask,
            decoder_input_ids=tgt,
            use_cache=use_cache,
            output_attentions=True,
            output_hidden_states=True,
            return_dict=True,
            **{self._cache_kw: kv},
        )

    def embeddings(self) -> tuple[nn.Module, nn.Module]:
        return input_embeddings(self.net.get_encoder()), input_embeddings(self.net.get_decoder())

    def output_embeddings(self) -> Tensor:
        return self.net.get_output_embeddings().weight

    def logits(self, states: Tensor) -> Tensor:
        """``lm_head`` as each family applies it: T5 scales the states first (tied embeddings),
        BART and Marian add ``final_logits_bias``."""
        if getattr(self.net.config, "scale_decoder_outputs", False):
            states = states * self.net.model_dim**-0.5
        out = output_layer(self.net)(states)
        bias = getattr(self.net, "final_logits_bias", None)
        return out if bias is None else out + bias

    # -- decoding rules -----------------------------------------------------------------------

    def adjust_logprobs(
        self, logprobs: Tensor, step: int, prefix: Tensor | None = None, max_len: int | None = None
    ) -> Tensor:
        """``generate()``'s logits processors over [rows, vocab], given the running ``prefix``
        [rows, step + 1] (start token first) and the length limit. Without a prefix (forced decoding
        of a given reference) the tokens banned at every step are removed and the first step's
        forced token is forced, so that a reference is scored as a hypothesis is."""
        if prefix is None:
            if self._banned:
                logprobs[:, self._banned] = float("-inf")
            if step == 0 and self.forced_bos_id is not None:
                logprobs[:] = float("-inf")
                logprobs[:, self.forced_bos_id] = 0.0  # as generate: log 1
            return logprobs
        return self._processor(max_len)(prefix, logprobs)

    def _processor(self, max_len: int | None) -> Any:
        key = -1 if max_len is None else max_len
        if key not in self._processors:
            self._processors[key] = build_processors(self.net, self.generation, max_len)
        return self._processors[key]


def build_processors(model: Any, generation: Any, max_len: int | None) -> Any:
    """The ``LogitsProcessorList`` that ``generate(generation_config=generation,
    max_new_tokens=max_len)`` builds for ``model``."""
    gen = copy.deepcopy(generation)
    gen.do_sample, gen.num_beams, gen.num_return_sequences = False, 1, 1
    gen.max_new_tokens = None
    gen.max_length = (max_len if max_len is not None else 10**9) + 1  # + the decoder start token
    if gen.min_new_tokens is not None:
        gen.min_length = gen.min_new_tokens + 1
    return logits_processors(model, gen)


def load_hf(path: Path, device: torch.device) -> HFModel:
    """Load a local Hugging Face seq2seq directory; anything missing or unreadable is a CheckpointError."""
    weights = [path / name for name in WEIGHTS if (path / name).is_file()]
    if not weights:
        expected = " or ".join(WEIGHTS[::2])
        raise CheckpointError(f"incomplete Hugging Face model: no weights ({expected})", path=str(path))
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError("incomplete Hugging Face model: no tokenizer files", path=str(path))
    check_version()
    try:
        with _quiet():
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            if config.model_type in REFUSED:
                raise CheckpointError(
                    f"model_type {config.model_type!r} cannot be traced: {REFUSED[config.model_type]}",
                    path=str(path / "config.json"),
                )
            if config.model_type not in FAMILIES:
                raise CheckpointError(
                    f"model_type {config.model_type!r} is not supported (supported: {', '.join(FAMILIES)})",
                    path=str(path / "config.json"),
                )
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
                path, local_files_only=True, attn_implementation="eager", output_loading_info=True
            )
    except CheckpointError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ... for bad directories
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "mismatched" in first:
            raise CheckpointError(
                "weights do not match config.json (tensor shapes differ)", path=str(path)
            ) from None
        raise CheckpointError(f"cannot load Hugging Face model ({first})", path=str(path)) from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        mismatched = [str(k[0]) for k in info.get("mismatched_keys") or []]
        missing = sorted(info.get("missing_keys") or []) + mismatched
        raise CheckpointError(
            f"weights do not match config.json ({len(missing)} missing or mismatched, e.g. {missing[0]})",
            path=str(weights[0]),
        )
    for key, neutral in UNSUPPORTED.items():
        if getattr(model.generation_config, key, None) not in neutral:
            value = getattr(model.generation_config, key)
            raise CheckpointError(
                f"sets {key}={value!r}, which beamscope cannot trace",
                path=str(path / "generation_config.json"),
            )
    model.eval().to(device)
    hf_edits.enable(model)  # what-if attention edits, through the family's own attention
    adapter = HFModel(path.name, model, tokenizer)
    adapter.path = path
    adapter.hash = file_hash(weights[0])
    return adapter


@contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars, warnings or log lines while loading (restored afterwards)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _first(*values: int | None) -> int:
    return next(int(v) for v in values if v is not None)


def _single_eos(eos: int | list[int] | None) -> int:
    ids = eos if isinstance(eos, list) else [eos]
    if len(ids) != 1 or ids[0] is None:
        raise CheckpointError(f"expected exactly one end-of-sentence token, got {eos!r}")
    return int(ids[0])


def _max_src_len(config: Any, tokenizer: Any) -> int | None:
    """Positions the encoder has (learned or fixed tables), else a sensible tokenizer limit, else None."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit:
        return int(limit)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else None


def _static_bans(gen: Any, eos_id: int) -> list[int]:
    """Tokens ``generate()`` never emits at any step (single-token bad words, suppressed tokens)."""
    bad = {w[0] for w in gen.bad_words_ids or [] if len(w) == 1 and w[0] != eos_id}
    return sorted(bad | set(gen.suppress_tokens or []))
