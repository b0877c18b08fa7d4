"""beamscope's traced beam search vs transformers' ``generate`` on the same Hugging Face model.

beamscope: ``trace()`` end to end (model loading, the traced beam search, records, Parquet +
           LanceDB writes into a temporary warehouse), default options: mean attention and
           last-layer encoder states stored; no references, so no forced decoding.
generate:  model + tokenizer loading, then per length-sorted batch ``generate(num_beams=5,
           output_attentions=True, output_hidden_states=True, output_scores=True,
           return_dict_in_generate=True)``; each batch's output is dropped before the next.

Both run in a fresh subprocess each (``python -m bench.hf_speed --child ...``), on the same
random-weight Marian models (a tiny one and a mid-sized 6+6-layer, d_model 512, vocab 8,000
one) and the same sentences, alternately ``REPEATS`` times; the best time is reported. Memory is
the growth of the child's peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) from
after the imports to the end, so it counts the model's weights on both sides; the largest growth
over the repeats is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

N_SENTENCES = 200
BEAM, MAX_LEN, BATCH = 5, 32, 32
REPEATS = 2
MODELS = {  # name: (layers, d_model, heads, ffn, vocab)
    "tiny": (2, 64, 4, 128, 300),
    "mid": (6, 512, 8, 2048, 8000),
}


def sentences(n: int, seed: int = 0) -> list[str]:
    """Pseudo-words from syllables: a corpus with varied lengths and sub-word splits."""
    rng = random.Random(seed)
    syllables = "ka lo mi ne ru ta so vi de pa gu fe zo li ba no te ri mu sa".split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(n)]


def build_marian(out: Path, layers: int, d_model: int, heads: int, ffn: int, vocab_size: int) -> None:
    """A random-weight Marian model with a sentence-piece tokenizer trained here (vocab padded)."""
    import sentencepiece as spm
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
    out.mkdir(parents=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences(5000, seed=1)),
        model_writer=buf,
        vocab_size=min(vocab_size - 3, 4000),
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes(buf.getvalue())
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in (sp.id_to_piece(i) for i in range(sp.get_piece_size())):
        if piece not in vocab and piece not in ("<s>", "<pad>"):
            vocab[piece] = len(vocab)
    while len(vocab) < vocab_size - 1:  # pieces the tokenizer never emits, as in real Marian vocabularies
        vocab[f"▁w{len(vocab)}"] = len(vocab)
    vocab["<pad>"] = pad_id = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = transformers.MarianTokenizer(
        str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json")
    )
    config = transformers.MarianConfig(
        vocab_size=len(vocab),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        pad_token_id=pad_id,
        eos_token_id=0,
        decoder_start_token_id=pad_id,
    )
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config)
    gen = model.generation_config
    gen.bad_words_ids, gen.forced_eos_token_id, gen.max_length, gen.num_beams = [[pad_id]], 0, 512, 4
    model.save_pretrained(out)
    tok.save_pretrained(out)


def run_beamscope(model_dir: Path, corpus: Path, device: str) -> None:
    from pipeline.beam import DecodeConfig
    from pipeline.trace import TraceConfig, trace

    with tempfile.TemporaryDirectory(prefix="beamscope-hf-bench-") as tmp:
        cfg = TraceConfig(
            model=str(model_dir),
            corpus=str(corpus),
            warehouse=str(Path(tmp) / "wh"),
            decoding=DecodeConfig(beam=BEAM, max_len=MAX_LEN),
            batch_size=BATCH,
            device=device,
        )
        trace(cfg, progress=False)


def run_generate(model_dir: Path, corpus: Path, device: str) -> None:
    import torch
    import transformers

    from pipeline.batching import length_batches
    from pipeline.models import resolve_device

    dev = resolve_device(device)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        model_dir, local_files_only=True, attn_implementation="eager"
    )
    model.eval().to(dev)
    texts = corpus.read_text(encoding="utf-8").splitlines()
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    for batch in length_batches(lengths, BATCH):
        inputs = tok([texts[i] for i in batch], return_tensors="pt", padding=True).to(dev)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                num_beams=BEAM,
                max_new_tokens=MAX_LEN,
                do_sample=False,
                early_stopping=False,
                output_attentions=True,
                output_hidden_states=True,
                output_scores=True,
                return_dict_in_generate=True,
            )
        del out


def child(kind: str, model_dir: Path, corpus: Path, device: str) -> None:
    """Run one side and print its wall time and peak-RSS growth as JSON."""
    import torch  # noqa: F401  (imports are not part of the measurement)
    import transformers  # noqa: F401

    import pipeline.trace  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    (run_beamscope if kind == "beamscope" else run_generate)(model_dir, corpus, device)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_growth_mb": (peak - before) / 1024}))


def _measure(kind: str, model_dir: Path, corpus: Path, device: str) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.hf_speed", "--child", kind, str(model_dir), str(corpus), device]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The best time and the largest memory growth of repeated runs."""
    return {
        "seconds": min(r["seconds"] for r in runs),
        "rss_growth_mb": max(r["rss_growth_mb"] for r in runs),
    }


def main(device_name: str = "auto") -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="beamscope-hf-bench-"))
    corpus = tmp / "sources.txt"
    corpus.write_text("\n".join(sentences(N_SENTENCES)) + "\n", encoding="utf-8")
    figures = {}
    print(f"== Hugging Face: beamscope trace vs generate ({N_SENTENCES} sentences, beam {BEAM}, ", end="")
    print(f"max {MAX_LEN} new tokens, batch {BATCH}, device {device_name}) ==")
    print("   memory: growth of each subprocess's peak RSS (ru_maxrss) from after imports; incl. weights")
    try:
        for name, sizes in MODELS.items():
            build_marian(tmp / name, *sizes)
            runs: dict[str, list[dict[str, float]]] = {"beamscope": [], "generate": []}
            for _ in range(REPEATS):  # alternately, so that drift of the machine hits both alike
                for kind, done in runs.items():
                    done.append(_measure(kind, tmp / name, corpus, device_name))
            ours, theirs = (_best(runs[kind]) for kind in ("beamscope", "generate"))
            ratio = ours["seconds"] / theirs["seconds"]
            figures[name] = {"beamscope": ours, "generate": theirs, "ratio": ratio}
            layers, d, heads, _, vocab = sizes
            print(f"marian {name:4s} ({layers}+{layers} layers, d_model {d}, {heads} heads, vocab {vocab})")
            print(f"  beamscope trace  {ours['seconds']:8.2f} s   peak RSS +{ours['rss_growth_mb']:7.1f} MB")
            print(
                f"  generate         {theirs['seconds']:8.2f} s   peak RSS +{theirs['rss_growth_mb']:7.1f} MB"
            )
            print(f"  trace / generate {ratio:8.2f} x   (target <= 1.0 x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.hf_speed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "CORPUS", "DEVICE"))
    args = parser.parse_args()
    if args.child:
        kind, model_dir, corpus, device = args.child
        child(kind, Path(model_dir), Path(corpus), device)
    else:
        main(args.device)
