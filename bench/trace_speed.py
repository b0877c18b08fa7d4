"""Traced vs untraced decoding of the same model and corpus, and warehouse bytes per target token.

untraced: encoder + beam search with capture off (what a plain decoder does).
traced:   the whole ``beamscope trace`` path: beam search with capture, forced decoding of the
          reference, sentence metrics, records, Parquet + LanceDB writes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from bench.common import best_of, dates_model
from pipeline.batching import length_batches, pad
from pipeline.beam import DecodeConfig, beam_search
from pipeline.corpus import read_corpus
from pipeline.models import load_model, resolve_device
from pipeline.trace import TraceConfig, trace
from warehouse import open_warehouse

CORPUS = "task:dates:test:2000"
DECODING = DecodeConfig(beam=5, max_len=20)
BATCH = 64


def main(device_name: str = "auto", repeats: int = 3) -> dict[str, float]:
    device = resolve_device(device_name)
    model_dir = dates_model(device)
    model = load_model(model_dir, device)
    sources = [model.src_ids(e.source) for e in read_corpus(CORPUS).examples]

    @torch.inference_mode()
    def untraced() -> None:
        for batch in length_batches([len(s) for s in sources], BATCH):
            src, mask = pad([sources[i] for i in batch], model.pad_id, device)
            beam_search(model, model.encode(src, mask), DECODING, trace=False)

    tmp = Path(tempfile.mkdtemp(prefix="beamscope-bench-"))

    def traced() -> None:
        shutil.rmtree(tmp / "wh", ignore_errors=True)
        trace(
            TraceConfig(
                model=str(model_dir),
                corpus=CORPUS,
                warehouse=str(tmp / "wh"),
                decoding=DECODING,
                batch_size=BATCH,
                device=device_name,
            ),
            progress=False,
        )

    untraced()  # warm up
    t_plain = t_traced = float("inf")
    for _ in range(repeats):  # interleaved, so drift of the machine hits both alike
        t_plain = min(t_plain, best_of(1, untraced))
        t_traced = min(t_traced, best_of(1, traced))
    with open_warehouse(tmp / "wh") as wh:
        tokens = wh.sql("SELECT count(*) FROM target_steps").item()
        sentences = wh.sql("SELECT count(*) FROM sentences").item()
    parquet = sum(p.stat().st_size for p in (tmp / "wh" / "tables").rglob("*.parquet"))
    vectors = sum(p.stat().st_size for p in (tmp / "wh" / "vectors").rglob("*") if p.is_file())
    shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "sentences": sentences,
        "target_tokens": tokens,
        "untraced_s": t_plain,
        "traced_s": t_traced,
        "traced_over_untraced": t_traced / t_plain,
        "traced_tokens_per_s": tokens / t_traced,
        "untraced_tokens_per_s": tokens / t_plain,
        "parquet_bytes_per_target_token": parquet / tokens,
        "vector_bytes_per_target_token": vectors / tokens,
    }
    print(f"== trace speed ({model_dir}, {CORPUS}, beam {DECODING.beam}, batch {BATCH}, {device}) ==")
    print(f"untraced decoding        {t_plain:8.2f} s   {tokens / t_plain:9.0f} target tokens/s")
    print(f"traced (whole trace)     {t_traced:8.2f} s   {tokens / t_traced:9.0f} target tokens/s")
    print(f"traced / untraced        {t_traced / t_plain:8.2f} x   (target <= 1.15 x)")
    print(f"Parquet bytes / token    {parquet / tokens:8.1f}     ({parquet / 1e6:.1f} MB, {tokens} tokens)")
    print(f"vector bytes / token     {vectors / tokens:8.1f}     (LanceDB, excluded above)")
    return figures


if __name__ == "__main__":
    main()
