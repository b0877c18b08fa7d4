"""Perturbation trace throughput against a normal trace of the same sentences: ``beamscope perturb``
decodes its variants through the same trace path, so its sentences per second should match."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.common import dates_model
from pipeline.beam import DecodeConfig
from pipeline.models import resolve_device
from pipeline.perturb_run import PerturbConfig, perturb_run
from pipeline.trace import TraceConfig, trace

SENTENCES = 1000
KIND = "reformat"  # every dates sentence has a variant (the same date in another format)


def main(device_name: str = "auto") -> dict[str, float]:
    model = dates_model(resolve_device(device_name))
    tmp = Path(tempfile.mkdtemp(prefix="beamscope-bench-perturb-"))
    wh = str(tmp / "wh")
    try:
        start = time.perf_counter()
        run = trace(
            TraceConfig(
                model=str(model),
                corpus=f"task:dates:test:{SENTENCES}",
                warehouse=wh,
                run_name="orig",
                decoding=DecodeConfig(beam=5, max_len=20),
                neighbours_run=None,
                device=device_name,
            ),
            progress=False,
        ).run_id
        t_trace = time.perf_counter() - start
        start = time.perf_counter()
        s = perturb_run(PerturbConfig(wh, run, KIND, device=device_name), progress=False)
        t_perturb = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    traced = SENTENCES / t_trace
    perturbed = (s.n_sentences - s.n_skipped) / t_perturb
    print(f"== perturbation trace ({SENTENCES} dates test sentences, beam 5, kind {KIND}) ==")
    print(f"normal trace        {t_trace:7.1f} s  {traced:7.1f} sentences/s")
    print(f"perturb {KIND:9s}   {t_perturb:7.1f} s  {perturbed:7.1f} sentences/s  ({s.n_skipped} skipped)")
    print(f"perturb / trace     {perturbed / traced:7.2f} x   (target: 1.00 x; includes model load)")
    return {"trace_sentences_per_s": traced, "perturb_sentences_per_s": perturbed}


if __name__ == "__main__":
    main()
