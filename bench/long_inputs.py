"""Long sources (LED-size: thousands of tokens): tracing with every attention weight stored vs
only each row's top-k / top-p (``--attention-top-k`` / ``--attention-top-p``).

A random-weight LED (2+2 layers, d_model 64, 4 heads, 4,096 encoder positions; the test builder's
byte-level BPE tokenizer) traces ``N_SENTENCES`` sources of about ``SOURCE_TOKENS`` tokens each,
beam ``BEAM``, attention per layer and head, up to ``MAX_LEN`` new tokens. Each setting runs in a
subprocess of its own (``python -m bench.long_inputs --child ...``): wall time and the growth of
its peak RSS from after the imports are measured there; attention rows and the attention table's
Parquet bytes are read from its warehouse.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_SENTENCES, SOURCE_TOKENS = 4, 3000
BEAM, MAX_LEN = 4, 24
SETTINGS = {  # name: (top_k, top_p)
    "every weight": (None, None),
    "top-p 0.9": (None, 0.9),
    "top-k 32": (32, None),
}


def _corpus(path: Path) -> None:
    from tests.pipeline.hf_builders import sentences

    words = " ".join(sentences(2000, seed=3)).split()
    n = SOURCE_TOKENS // 2  # the tokenizer splits the pseudo-words into about two pieces each
    lines = [" ".join(words[i * n : (i + 1) * n]) for i in range(N_SENTENCES)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def child(model: Path, corpus: Path, top_k: int | None, top_p: float | None) -> None:
    """Trace once with the setting; print seconds, peak-RSS growth, rows and bytes as JSON."""
    import torch

    from pipeline.beam import DecodeConfig
    from pipeline.records.attention import AttentionKeep
    from pipeline.trace import TraceConfig, trace
    from warehouse import open_warehouse

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="beamscope-long-") as tmp:
        wh = Path(tmp) / "wh"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        cfg = TraceConfig(
            model=str(model),
            corpus=str(corpus),
            warehouse=str(wh),
            decoding=DecodeConfig(beam=BEAM, max_len=MAX_LEN, per_head=True),
            batch_size=N_SENTENCES,
            device="cpu",
            threads=1,
            attention_keep=AttentionKeep(top_k, top_p),
        )
        trace(cfg, progress=False)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open_warehouse(wh) as w:
            rows = int(w.sql("SELECT count(*) AS n FROM attention")["n"][0])
            src = w.sql("SELECT avg(n) AS n FROM (SELECT count(*) AS n FROM source_tokens GROUP BY sent_id)")
            kept = w.sql("SELECT avg(coalesce(attn_kept_mass, 1)) AS m FROM target_steps")["m"][0]
        size = sum(p.stat().st_size for p in wh.rglob("*.parquet") if "attention" in p.parts)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_growth_mb": (peak - before) / 1024,
                "attention_rows": rows,
                "attention_mb": size / 1e6,
                "source_tokens": float(src["n"][0]),
                "kept_mass": float(kept),
            }
        )
    )


def _measure(model: Path, corpus: Path, top_k: int | None, top_p: float | None) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.long_inputs",
        "--child",
        str(model),
        str(corpus),
        str(top_k),
        str(top_p),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"long-input child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> dict[str, dict[str, float]]:
    from tests.pipeline.hf_builders import BUILDERS, Sizes

    tmp = Path(tempfile.mkdtemp(prefix="beamscope-long-bench-"))
    try:
        BUILDERS["led"](tmp / "led", sizes=Sizes(d_model=64, layers=2, heads=4, ffn=128, positions=4096))
        _corpus(tmp / "long.txt")
        print(f"== Long sources: LED, {N_SENTENCES} sources, beam {BEAM}, {MAX_LEN} new tokens, per head ==")
        figures = {name: _measure(tmp / "led", tmp / "long.txt", *keep) for name, keep in SETTINGS.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"   source tokens per sentence: {figures['every weight']['source_tokens']:.0f}")
    heads = ("attention stored", "time s", "peak RSS +MB", "rows", "MB", "kept mass")
    print("   {:14s} {:>8s} {:>13s} {:>11s} {:>8s} {:>10s}".format(*heads))
    for name, f in figures.items():
        print(
            f"   {name:14s} {f['seconds']:8.1f} {f['rss_growth_mb']:13.0f} {f['attention_rows']:11,d} "
            f"{f['attention_mb']:8.1f} {f['kept_mass']:10.3f}"
        )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.long_inputs")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "CORPUS", "TOP_K", "TOP_P"))
    args = parser.parse_args()
    if args.child:
        model, corpus, k, p = args.child
        child(Path(model), Path(corpus), None if k == "None" else int(k), None if p == "None" else float(p))
    else:
        main()
