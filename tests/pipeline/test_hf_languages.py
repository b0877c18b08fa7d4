"""Language settings of multilingual Hugging Face models: ``--src-lang`` / ``--tgt-lang``.

A tiny NLLB-style model (model_type m2m_100, NllbTokenizer) is traced through the command line with
a forced target language; the run records the languages and the tokens they resolved to, every
hypothesis and reference starts with the target language, and bad codes are refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from pipeline.beam import DecodeConfig
from pipeline.models import for_decoding, load_model, load_run_model
from schemas import ConfigError
from tests.helpers import assert_one_line_error, run_cli
from tests.pipeline.hf_builders import BUILDERS, TEXT
from warehouse import open_warehouse

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-lang")
    for name in ("m2m_100", "mbart", "t5"):
        BUILDERS[name](root / name)
    return {name: root / name for name in ("m2m_100", "mbart", "t5")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hf-lang-corpus") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{r}\n" for s, r in zip(TEXT[:8], TEXT[8:16], strict=True)))
    return path


def _trace(model: Path, corpus: Path, wh: Path, *langs: str):
    return run_cli(
        "trace", "--model", str(model), "--corpus", str(corpus), "--warehouse", str(wh),
        "--beam", "4", "--max-len", "8", "--device", "cpu", *langs,
    )  # fmt: skip


def test_nllb_traced_with_a_forced_target_language(dirs, corpus, tmp_path) -> None:
    wh = tmp_path / "wh"
    proc = _trace(dirs["m2m_100"], corpus, wh, "--src-lang", "deu_Latn", "--tgt-lang", "fra_Latn")
    assert proc.returncode == 0, proc.stderr
    tok = transformers.AutoTokenizer.from_pretrained(dirs["m2m_100"])
    fra, deu = tok.convert_tokens_to_ids(["fra_Latn", "deu_Latn"])
    with open_warehouse(wh) as w:
        run = w.sql("SELECT * FROM runs").row(0, named=True)
        first = w.sql("SELECT token_id, logprob FROM target_steps WHERE step = 0")
        ref_first = w.sql("SELECT token_id, logprob FROM reference_steps WHERE step = 0")
        src_first = w.sql("SELECT token FROM source_tokens WHERE src_pos = 0")
    decoding = json.loads(run["decoding"])
    assert decoding["src_lang"] == "deu_Latn" and decoding["tgt_lang"] == "fra_Latn"
    assert decoding["forced_bos_token_id"] == fra and decoding["decoder_start_token_id"] == tok.eos_token_id
    assert set(src_first["token"]) == {"deu_Latn"}  # the source is read as German
    assert first.height == 8 and set(first["token_id"]) == {fra} and set(first["logprob"]) == {0.0}
    assert (
        ref_first.height == 8 and set(ref_first["token_id"]) == {fra} and set(ref_first["logprob"]) == {0.0}
    )
    # the run's model, loaded again for it (what-if, faults, perturbations), has the same languages
    model = load_run_model(run, "cpu")
    assert model.languages == ("deu_Latn", "fra_Latn") and model.forced_bos_id == fra
    assert all(model.src_ids(s)[0] == deu for s in TEXT[:8])
    # equal to generate with the same source language and forced first token
    tok.src_lang = "deu_Latn"
    src = tok(TEXT[:8], return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.net.generate(**src, num_beams=4, max_new_tokens=8, forced_bos_token_id=fra)
    with open_warehouse(wh) as w:
        hyps = w.sql("SELECT hypothesis FROM sentences ORDER BY sent_id")["hypothesis"].to_list()
    assert hyps == tok.batch_decode(out, skip_special_tokens=True)


def test_another_target_language_is_another_forced_token(dirs) -> None:
    model = load_model(dirs["m2m_100"], "cpu")
    deu, dec = for_decoding(model, DecodeConfig(tgt_lang="deu_Latn"))
    assert deu.forced_bos_id == model.tokenizer.convert_tokens_to_ids("deu_Latn")
    assert dec.src_lang == "eng_Latn"  # the tokenizer's own source language is recorded
    assert model.forced_bos_id is None and model.languages == ("eng_Latn", None)  # the original is unchanged
    assert deu.tgt_ids(TEXT[0])[0] == deu.forced_bos_id
    with pytest.raises(ConfigError, match="decoded with forced_bos_token_id"):  # a run of another language
        for_decoding(model, DecodeConfig(tgt_lang="fra_Latn", forced_bos_token_id=deu.forced_bos_id))


def test_mbart_targets_marked_at_their_end_start_the_decoder(dirs, tmp_path) -> None:
    """mBART-25's tokenizer writes ``text </s> [lang]``: the target language is the decoder's start."""
    model = load_model(dirs["mbart"], "cpu")
    vocab = [(t, 0.0) for t in model.tokenizer.convert_ids_to_tokens(range(len(model.tokenizer)))]
    model.tokenizer = transformers.MBartTokenizer(vocab=vocab, src_lang="en_XX")
    ro, dec = for_decoding(model, DecodeConfig(tgt_lang="ro_RO"))
    ro_id = ro.tokenizer.convert_tokens_to_ids("ro_RO")
    assert ro.bos_id == ro_id == dec.decoder_start_token_id and dec.forced_bos_token_id is None
    assert ro.tgt_ids(TEXT[0]) == ro.tokenizer(text_target=TEXT[0])["input_ids"][:-2]  # no </s> [ro_RO]


@pytest.mark.parametrize(
    ("model", "langs", "needles"),
    [
        ("m2m_100", ("--tgt-lang", "fr"), ("--tgt-lang 'fr' is not a language code", "fra_Latn")),
        ("m2m_100", ("--src-lang", "xx_Latn"), ("--src-lang 'xx_Latn' is not a language code",)),
        ("mbart", ("--tgt-lang", "fra_Latn"), ("'fra_Latn' is not a language code", "fr_XX")),
        ("t5", ("--tgt-lang", "fr"), ("model_type 't5'", "takes no language codes")),
    ],
)
def test_unknown_or_mismatched_language_codes_are_one_line(
    dirs, corpus, tmp_path, model, langs, needles
) -> None:
    proc = _trace(dirs[model], corpus, tmp_path / "wh", *langs)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "wh").exists() or not any((tmp_path / "wh").rglob("*.parquet"))
