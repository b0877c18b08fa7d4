"""Hugging Face models of every family the adapter takes, with tokenizers trained on the spot (nothing
is downloaded): tiny ones for the tests, other ``Sizes`` for the benchmarks."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import pytest
import sentencepiece as spm
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer, CharBPETokenizer, SentencePieceBPETokenizer

from pipeline.models import hf_families
from pipeline.models.hf_families import output_layer

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

FAMILIES = list(hf_families.FAMILIES)  # every family the adapter takes has a builder here (BUILDERS)
NOT_EDITABLE = ["led", "fsmt", "prophetnet"]  # compute their attention themselves: edits are refused
EDITABLE = [f for f in FAMILIES if f not in NOT_EDITABLE]
LANGUAGES = {  # multilingual families: the source and target languages their tests decode with
    "mbart": ("en_XX", "fr_XX"),
    "m2m_100": ("eng_Latn", "fra_Latn"),
}
MAX_NEW = 12
ATOL = 1e-4


@dataclass(frozen=True)
class Sizes:
    """A model's shape: layers on each side, width, heads, feed-forward width, longest position."""

    d_model: int = 32
    layers: int = 2
    heads: int = 4
    ffn: int = 64
    positions: int = 64

    def bart(self) -> dict[str, int]:
        """The sizes in the config names of Marian, BART, LED, Pegasus, mBART, M2M100 and FSMT."""
        return dict(
            d_model=self.d_model,
            encoder_layers=self.layers,
            decoder_layers=self.layers,
            encoder_attention_heads=self.heads,
            decoder_attention_heads=self.heads,
            encoder_ffn_dim=self.ffn,
            decoder_ffn_dim=self.ffn,
        )


TINY = Sizes()  # what the tests build


class Builder(Protocol):
    """A family's builder: a random-weight model of ``sizes`` and its tokenizer saved into ``out``."""

    def __call__(self, out: Path, *, sizes: Sizes = TINY) -> None: ...


def sentences(n: int, seed: int = 0) -> list[str]:
    """Pseudo-words from syllables, so that the tokenizers split some of them into pieces."""
    rng = random.Random(seed)
    syllables = "ka lo mi ne ru ta so vi de pa gu fe zo li ba no".split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(120)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) for _ in range(n)]


TEXT = sentences(400)
SOURCES = [TEXT[i] for i in (3, 10, 0, 7, 21, 5)]  # different lengths: the batch is padded


def _spm(size: int) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT),
        model_writer=buf,
        vocab_size=size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    return buf.getvalue()


def _spm_vocab(size: int = 200) -> list[tuple[str, float]]:
    """The pieces and scores of a sentence-piece unigram model trained on ``TEXT``."""
    sp = spm.SentencePieceProcessor(model_proto=_spm(size))
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def _bpe(
    trainer, size: int, specials: list[str], **options: object
) -> tuple[dict[str, int], list[tuple[str, str]]]:  # noqa: ANN001
    """The vocabulary and merges of a ``tokenizers`` BPE ``trainer`` trained on ``TEXT``."""
    trainer.train_from_iterator(
        TEXT, vocab_size=size, special_tokens=specials, show_progress=False, **options
    )
    spec = json.loads(trainer._tokenizer.to_str())["model"]
    return spec["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]


FAIRSEQ_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)  # BART & co.


def _randomise(model, std: float = 0.3, eos_bias: float | None = None) -> None:
    """Larger random weights than the init, so that distributions are peaked and varied
    (``std`` and ``eos_bias`` are chosen per family so that hypotheses end at different steps)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        if eos_bias is not None:  # some hypotheses end early, so lengths compete
            model.final_logits_bias.zero_()
            model.final_logits_bias[0, model.config.eos_token_id] = eos_bias


def build_marian(out: Path, *, sizes: Sizes = TINY) -> None:
    out.mkdir(parents=True)
    proto = _spm(200)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    (out / "source.spm").write_bytes(proto)
    (out / "target.spm").write_bytes(proto)
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in (sp.id_to_piece(i) for i in range(sp.get_piece_size())):
        vocab.setdefault(piece, len(vocab)) if piece != "<pad>" else None
    vocab["<pad>"] = pad_id = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    tok = transformers.MarianTokenizer(
        str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json")
    )
    config = transformers.MarianConfig(
        vocab_size=len(vocab),
        **sizes.bart(),
        max_position_embeddings=sizes.positions,
        pad_token_id=pad_id,
        eos_token_id=0,
        decoder_start_token_id=pad_id,
    )
    model = transformers.MarianMTModel(config)
    _randomise(model, std=0.15, eos_bias=1.0)
    gen = model.generation_config  # what opus-mt checkpoints ship
    gen.bad_words_ids, gen.forced_eos_token_id, gen.max_length, gen.num_beams = [[pad_id]], 0, 512, 4
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_t5(
    out: Path, family: str = "T5", eos: float = 2.5, *, sizes: Sizes = TINY, **extra: object
) -> None:
    """T5, mT5, umT5 and LongT5 (``family`` is the class-name prefix; ``extra``: its own configuration)."""
    vocab = _spm_vocab()
    tok = transformers.T5Tokenizer(vocab=vocab, extra_ids=0)
    config = getattr(transformers, f"{family}Config")(
        vocab_size=len(vocab),
        d_model=sizes.d_model,
        d_kv=sizes.d_model // sizes.heads,
        d_ff=sizes.ffn,
        num_layers=sizes.layers,
        num_heads=sizes.heads,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,  # as T5 v1.1 and Flan-T5
        **extra,
    )
    model = getattr(transformers, f"{family}ForConditionalGeneration")(config)
    _randomise(model)
    _eos_along_mean_state(model, tok, eos)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _eos_along_mean_state(model, tok, value: float) -> None:
    """Raise the EOS logit of the average decoder state by ``value`` (T5 has no logits bias; with a
    bias alone a tiny Pegasus ends every hypothesis at once or never)."""
    batch = tok(TEXT[:32], text_target=TEXT[32:64], return_tensors="pt", padding=True)
    model.eval()  # no dropout: the same model at every build
    with torch.no_grad():
        mean = model(**batch, output_hidden_states=True).decoder_hidden_states[-1][:, 1:].mean(dim=(0, 1))
        output_layer(model).weight[model.config.eos_token_id] += value * mean / mean.dot(mean)


def _build_bart_like(out: Path, family: str, sizes: Sizes, **positions: object) -> None:
    """BART and LED: a byte-level BPE tokenizer trained on ``TEXT``, BART's special tokens."""
    vocab, merges = _bpe(
        ByteLevelBPETokenizer(), 300, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], min_frequency=2
    )
    prefix = {"bart": "Bart", "led": "LED"}[family]
    tok = getattr(transformers, f"{prefix}Tokenizer")(vocab=vocab, merges=merges)
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=len(vocab), **sizes.bart(), **FAIRSEQ_IDS, **positions
    )
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    _randomise(model, eos_bias=3.0)
    gen = model.generation_config  # the processors of bart-large-cnn, except a short min_length
    gen.forced_bos_token_id, gen.forced_eos_token_id, gen.no_repeat_ngram_size, gen.min_length = 0, 2, 3, 3
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_bart(out: Path, *, sizes: Sizes = TINY) -> None:
    _build_bart_like(out, "bart", sizes, max_position_embeddings=sizes.positions)


def build_led(out: Path, *, sizes: Sizes = TINY) -> None:
    _build_bart_like(
        out,
        "led",
        sizes,
        max_encoder_position_embeddings=sizes.positions,
        max_decoder_position_embeddings=sizes.positions,
        attention_window=[8] * sizes.layers,
    )


def build_pegasus(
    out: Path, family: str = "Pegasus", eos: float = 4.0, *, sizes: Sizes = TINY, **extra: object
) -> None:
    """Pegasus, Pegasus-X and BigBird-Pegasus (``family`` is the class-name prefix; ``extra``: its
    own configuration)."""
    tok = transformers.PegasusTokenizer(vocab=_spm_vocab(), offset=0)  # <pad> 0, </s> 1, <unk> 2
    config = getattr(transformers, f"{family}Config")(
        vocab_size=len(tok),
        **sizes.bart(),
        max_position_embeddings=sizes.positions,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **extra,
    )
    model = getattr(transformers, f"{family}ForConditionalGeneration")(config)
    _randomise(model)
    _eos_along_mean_state(model, tok, eos)
    model.generation_config.forced_eos_token_id = 1  # as the pegasus checkpoints ship
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_mbart(out: Path, *, sizes: Sizes = TINY) -> None:
    """mBART-50: a sentence-piece vocabulary in fairseq order, the 52 language codes after it; the
    decoder starts with </s> and the target language is the forced first token (as mbart-large-50)."""
    tok = transformers.MBart50Tokenizer(vocab=_spm_vocab())
    config = transformers.MBartConfig(
        vocab_size=len(tok), **sizes.bart(), max_position_embeddings=sizes.positions, **FAIRSEQ_IDS
    )
    model = transformers.MBartForConditionalGeneration(config)
    _randomise(model, eos_bias=3.0)
    model.generation_config.forced_eos_token_id = 2
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_m2m_100(out: Path, *, sizes: Sizes = TINY) -> None:
    """NLLB-200 (model_type m2m_100): a sentence-piece BPE vocabulary, three language codes; the
    source starts with its language code, the target language is the forced first token."""
    vocab, merges = _bpe(SentencePieceBPETokenizer(), 200, ["<s>", "<pad>", "</s>", "<unk>"])
    tok = transformers.NllbTokenizer(
        vocab=vocab, merges=merges, extra_special_tokens=["eng_Latn", "fra_Latn", "deu_Latn"]
    )
    config = transformers.M2M100Config(
        vocab_size=len(tok), **sizes.bart(), max_position_embeddings=sizes.positions, **FAIRSEQ_IDS
    )
    model = transformers.M2M100ForConditionalGeneration(config)
    _randomise(model, std=0.2)
    _eos_along_mean_state(model, tok, 4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_fsmt(out: Path, *, sizes: Sizes = TINY) -> None:
    """FSMT (fairseq WMT19): separate source and target vocabularies of a character BPE."""
    out.mkdir(parents=True)
    trained, pairs = _bpe(CharBPETokenizer(), 200, ["<s>", "<pad>", "</s>", "<unk>"])
    vocab = dict(sorted(trained.items(), key=lambda kv: kv[1]))
    merges = [" ".join(m) for m in pairs]
    for side in ("src", "tgt"):
        (out / f"vocab-{side}.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("".join(f"{m} 1\n" for m in merges))
    tok = transformers.FSMTTokenizer(
        langs=["en", "de"],
        src_vocab_file=str(out / "vocab-src.json"),
        tgt_vocab_file=str(out / "vocab-tgt.json"),
        merges_file=str(out / "merges.txt"),
    )
    config = transformers.FSMTConfig(
        langs=["en", "de"],
        src_vocab_size=len(vocab),
        tgt_vocab_size=len(vocab),
        **sizes.bart(),
        max_position_embeddings=sizes.positions,
    )
    model = transformers.FSMTForConditionalGeneration(config)
    _randomise(model, std=0.15)
    _eos_along_mean_state(model, tok, 1.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_prophetnet(out: Path, *, sizes: Sizes = TINY) -> None:
    """ProphetNet: a word-piece vocabulary; the decoder predicts two future tokens while training
    (its n-gram streams), generation reads the main stream only."""
    out.mkdir(parents=True)
    words = sorted({w for line in TEXT for w in line.split()})
    vocab = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "[X_SEP]", *words[:150]]
    vocab += sorted({c for w in words for c in w}) + sorted({f"##{c}" for w in words for c in w})
    (out / "prophetnet.tokenizer").write_text("\n".join(vocab) + "\n")
    tok = transformers.ProphetNetTokenizer(str(out / "prophetnet.tokenizer"))
    config = transformers.ProphetNetConfig(
        vocab_size=len(vocab),
        hidden_size=sizes.d_model,
        encoder_ffn_dim=sizes.ffn,
        decoder_ffn_dim=sizes.ffn,
        num_encoder_layers=sizes.layers,
        num_decoder_layers=sizes.layers,
        num_encoder_attention_heads=sizes.heads,
        num_decoder_attention_heads=sizes.heads,
        max_position_embeddings=sizes.positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    model = transformers.ProphetNetForConditionalGeneration(config)
    _randomise(model)
    _eos_along_mean_state(model, tok, 4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)


BUILDERS: dict[str, Builder] = {
    "marian": build_marian,
    "t5": build_t5,
    "mt5": partial(build_t5, family="MT5"),
    "umt5": partial(build_t5, family="UMT5", eos=1.5),
    "bart": build_bart,
    "mbart": build_mbart,
    "m2m_100": build_m2m_100,
    "pegasus": build_pegasus,
    "pegasus_x": partial(build_pegasus, family="PegasusX", block_size=8, num_global_tokens=4),
    "bigbird_pegasus": partial(build_pegasus, family="BigBirdPegasus", attention_type="original_full"),
    "led": build_led,
    "longt5": partial(build_t5, family="LongT5", encoder_attention_type="local", local_radius=4),
    "fsmt": build_fsmt,
    "prophetnet": build_prophetnet,
}
