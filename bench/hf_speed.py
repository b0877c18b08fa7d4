"""beamscope's traced beam search vs transformers' ``generate``, for every Hugging Face family.

Models: one per family of ``pipeline.models.hf_families.FAMILIES``, built by the tests' builders
(``tests.pipeline.hf_builders.BUILDERS``) at mid size: 6+6 layers, d_model 512, 8 heads, feed-forward
2048 (T5 family: d_kv 64), 512 positions; random weights (``_randomise``: large, so distributions are
peaked). Vocabularies as the builders train them on the spot: 112 to 300 pieces, so the output layer
costs little beside real vocabularies of 32k-250k. mbart and m2m_100 decode their ``LANGUAGES``.

trace:          ``trace()`` end to end (model loading, the traced beam search, records, Parquet +
                LanceDB writes into a temporary warehouse), default options: mean attention and
                last-layer encoder states stored; no references, so no forced decoding.
generate-all:   model + tokenizer loading (eager attention, as beamscope loads it), then per
                length-sorted batch ``generate(num_beams=5, output_attentions=True,
                output_hidden_states=True, output_scores=True, return_dict_in_generate=True)``;
                each batch's output is dropped before the next.
generate-plain: the same with no extra outputs and the default attention implementation.

Each runs in a fresh subprocess (``python -m bench.hf_speed --child ...``) with ``default_threads()``
torch threads (trace's own default), on the same sentences, in turn ``REPEATS`` times; the best time
is reported. Memory is the growth of the child's peak resident set (``ru_maxrss``) from after the
imports to the end, so it counts the model's weights. Hypothesis lengths (mean tokens, end of
sentence included, from the traced warehouse) show how the random models end: most run to or near
``MAX_LEN`` (26 to 32 tokens on CPU), pegasus ends earlier (21). A family whose child fails is
printed with the child's error and left out of the returned figures.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_SENTENCES = 100
BEAM, MAX_LEN, BATCH = 5, 32, 32
REPEATS = 1
MID = {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "positions": 512}  # hf_builders.Sizes
KINDS = ("trace", "generate-all", "generate-plain")


def sentences(n: int, seed: int = 0) -> list[str]:
    """Pseudo-words from syllables: a corpus with varied lengths and sub-word splits."""
    rng = random.Random(seed)
    syllables = "ka lo mi ne ru ta so vi de pa gu fe zo li ba no te ri mu sa".split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(n)]


def run_trace(model_dir: Path, corpus: Path, device: str, langs: tuple[str, str] | None, wh: Path) -> None:
    from pipeline.beam import DecodeConfig
    from pipeline.threads import default_threads
    from pipeline.trace import TraceConfig, trace

    src, tgt = langs or (None, None)
    cfg = TraceConfig(
        model=str(model_dir),
        corpus=str(corpus),
        warehouse=str(wh),
        decoding=DecodeConfig(beam=BEAM, max_len=MAX_LEN, src_lang=src, tgt_lang=tgt),
        batch_size=BATCH,
        device=device,
        threads=default_threads(),
    )
    trace(cfg, progress=False)


def run_generate(
    model_dir: Path, corpus: Path, device: str, langs: tuple[str, str] | None, all_outputs: bool
) -> None:
    import torch
    import transformers

    from pipeline.batching import length_batches
    from pipeline.models import resolve_device

    dev = resolve_device(device)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    attention = {"attn_implementation": "eager"} if all_outputs else {}
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir, local_files_only=True, **attention)
    model.eval().to(dev)
    extra: dict[str, object] = {}
    if langs:
        tok.src_lang = langs[0]
        extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(langs[1])
    if all_outputs:
        extra |= dict.fromkeys(
            ("output_attentions", "output_hidden_states", "output_scores", "return_dict_in_generate"), True
        )
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
                **extra,
            )
        del out


def mean_hyp_len(wh: Path) -> float:
    from warehouse import open_warehouse

    with open_warehouse(wh) as w:
        return float(w.sql("SELECT avg(hyp_len) AS n FROM sentences")["n"].item())


def child(kind: str, family: str, model_dir: Path, corpus: Path, device: str) -> None:
    """Run one side and print its wall time and peak-RSS growth (and the trace's mean hypothesis
    length) as JSON."""
    import torch
    import transformers

    import pipeline.trace  # noqa: F401  (imports are not part of the measurement)
    from pipeline.threads import default_threads
    from tests.pipeline.hf_builders import LANGUAGES

    torch.set_num_threads(default_threads())
    transformers.utils.logging.disable_progress_bar()
    langs = LANGUAGES.get(family)
    with tempfile.TemporaryDirectory(prefix="beamscope-hf-bench-") as tmp:
        wh = Path(tmp) / "wh"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if kind == "trace":
            run_trace(model_dir, corpus, device, langs, wh)
        else:
            run_generate(model_dir, corpus, device, langs, all_outputs=kind == "generate-all")
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        figures = {"seconds": seconds, "rss_growth_mb": (peak - before) / 1024}
        if kind == "trace":
            figures["hyp_len"] = mean_hyp_len(wh)
    print(json.dumps(figures))


class ChildFailed(RuntimeError):
    """A child's error, as the last line of its standard error."""


def _measure(kind: str, family: str, model_dir: Path, corpus: Path, device: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.hf_speed",
        "--child",
        kind,
        family,
        str(model_dir),
        str(corpus),
        device,
    ]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root)
    if proc.returncode != 0:
        raise ChildFailed(f"{kind} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The best time and the largest memory growth of repeated runs (and any other figure's last)."""
    return {
        **runs[-1],
        "seconds": min(r["seconds"] for r in runs),
        "rss_growth_mb": max(r["rss_growth_mb"] for r in runs),
    }


def measure_family(family: str, model_dir: Path, corpus: Path, device: str) -> dict[str, float]:
    """The three timings of one built model, their ratios, memory growths and hypothesis length."""
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for _ in range(REPEATS):  # in turn, so that drift of the machine hits all alike
        for kind, done in runs.items():
            done.append(_measure(kind, family, model_dir, corpus, device))
    best = {kind: _best(done) for kind, done in runs.items()}
    figures = {f"{kind}_s": best[kind]["seconds"] for kind in KINDS}
    figures |= {f"{kind}_rss_mb": best[kind]["rss_growth_mb"] for kind in KINDS}
    figures["ratio_all"] = figures["trace_s"] / figures["generate-all_s"]
    figures["ratio_plain"] = figures["trace_s"] / figures["generate-plain_s"]
    figures["hyp_len"] = best["trace"]["hyp_len"]
    return figures


HEADER = (
    f"{'family':15s} | {'trace s':>8s} | {'gen-all s':>9s} | {'gen-plain s':>11s} | {'ratio all':>9s} | "
    f"{'ratio plain':>11s} | {'peak RSS MB trace / all / plain':>31s} | {'hyp len':>7s}"
)


def row(family: str, f: dict[str, float]) -> str:
    rss = " / ".join(f"{f[f'{kind}_rss_mb']:.0f}" for kind in KINDS)
    return (
        f"{family:15s} | {f['trace_s']:8.2f} | {f['generate-all_s']:9.2f} | {f['generate-plain_s']:11.2f} | "
        f"{f['ratio_all']:8.2f}x | {f['ratio_plain']:10.2f}x | {'+' + rss:>31s} | {f['hyp_len']:7.1f}"
    )


def main(device_name: str = "auto", families: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Print the table of ``families`` (default: all); return each family's figures (a family whose
    child failed is printed only)."""
    import transformers

    from pipeline.models import resolve_device
    from pipeline.models.hf_families import FAMILIES
    from pipeline.threads import default_threads
    from tests.pipeline.hf_builders import BUILDERS, Sizes

    transformers.utils.logging.disable_progress_bar()
    sizes = Sizes(**MID)
    tmp = Path(tempfile.mkdtemp(prefix="beamscope-hf-bench-"))
    corpus = tmp / "sources.txt"
    corpus.write_text("\n".join(sentences(N_SENTENCES)) + "\n", encoding="utf-8")
    device = resolve_device(device_name)
    print(f"== Hugging Face families: beamscope trace vs generate ({N_SENTENCES} sentences, beam {BEAM},")
    print(f"   max {MAX_LEN} new tokens, batch {BATCH}, device {device}, torch threads {default_threads()},")
    print(f"   best of {REPEATS}; models {sizes}, random weights, trained vocabularies) ==")
    print("   memory: growth of each subprocess's peak RSS (ru_maxrss) from after imports; incl. weights")
    print(HEADER)
    figures = {}
    try:
        for family in families or FAMILIES:
            BUILDERS[family](tmp / family, sizes=sizes)
            try:
                figures[family] = measure_family(family, tmp / family, corpus, device_name)
                print(row(family, figures[family]), flush=True)
            except ChildFailed as e:  # the other families are still measured
                print(f"{family:15s} | {e}", flush=True)
            shutil.rmtree(tmp / family)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.hf_speed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--families", nargs="+", help="only these families (default: all)")
    parser.add_argument("--child", nargs=5, metavar=("KIND", "FAMILY", "MODEL", "CORPUS", "DEVICE"))
    args = parser.parse_args()
    if args.child:
        kind, family, model_dir, corpus, device = args.child
        child(kind, family, Path(model_dir), Path(corpus), device)
    else:
        main(args.device, args.families)
