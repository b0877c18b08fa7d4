"""Traced vs untraced decoding of the same model and corpus, and warehouse bytes per target token.

untraced decoding: encoder + beam search with capture off (what a plain decoder does).
traced decoding:   encoder + the same beam search with capture on (top-k, entropy, attention,
                   decoder states, the beam tree), turned into per-sentence numpy traces.
whole trace:       ``beamscope trace`` end to end: the above plus forced decoding of the
                   reference, sacrebleu metrics, records, Parquet + LanceDB writes, model and
                   corpus loading.
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
    def decode(capture: bool) -> None:
        for batch in length_batches([len(s) for s in sources], BATCH):
            src, mask = pad([sources[i] for i in batch], model.pad_id, device)
            beam_search(model, model.encode(src, mask), DECODING, trace=capture)

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
                threads=torch.get_num_threads(),  # the untraced decoding's own thread count
            ),
            progress=False,
        )

    decode(False)  # warm up
    t_plain = t_capture = t_traced = float("inf")
    for _ in range(repeats):  # interleaved, so drift of the machine hits all alike
        t_plain = min(t_plain, best_of(1, lambda: decode(False)))
        t_capture = min(t_capture, best_of(1, lambda: decode(True)))
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
        "traced_decoding_s": t_capture,
        "traced_over_untraced": t_capture / t_plain,
        "whole_trace_s": t_traced,
        "whole_trace_over_untraced": t_traced / t_plain,
        "traced_tokens_per_s": tokens / t_traced,
        "untraced_tokens_per_s": tokens / t_plain,
        "parquet_bytes_per_target_token": parquet / tokens,
        "vector_bytes_per_target_token": vectors / tokens,
    }
    print(f"== trace speed ({model_dir}, {CORPUS}, beam {DECODING.beam}, batch {BATCH}, {device}) ==")
    print(f"untraced decoding        {t_plain:8.2f} s   {tokens / t_plain:9.0f} target tokens/s")
    print(f"traced decoding          {t_capture:8.2f} s   {tokens / t_capture:9.0f} target tokens/s")
    print(f"whole trace (written)    {t_traced:8.2f} s   {tokens / t_traced:9.0f} target tokens/s")
    print(f"traced / untraced        {t_capture / t_plain:8.2f} x   (target <= 1.15 x)")
    print(f"whole trace / untraced   {t_traced / t_plain:8.2f} x   (forced decoding, metrics, writes)")
    print(f"Parquet bytes / token    {parquet / tokens:8.1f}     ({parquet / 1e6:.1f} MB, {tokens} tokens)")
    print(f"vector bytes / token     {vectors / tokens:8.1f}     (LanceDB, excluded above)")
    return figures


if __name__ == "__main__":
    main()
