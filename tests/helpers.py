"""Running the real ``beamscope`` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BEAMSCOPE = str(Path(sys.executable).parent / "beamscope")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BEAMSCOPE, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code != 0, exactly one line on stderr, no traceback, mentioning ``needles``."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def trace_run(model, corpus, warehouse, name: str, decoding=None, **options):  # noqa: ANN001
    """Trace ``corpus`` with ``model`` into ``warehouse`` as run ``name``, on the CPU, quietly;
    ``decoding`` defaults to a small beam (2, top-4, 14 tokens); ``options``: other TraceConfig fields
    (neighbour agreement of every state unless ``agreement`` says otherwise)."""
    from pipeline.beam import DecodeConfig
    from pipeline.trace import TraceConfig, trace

    cfg = TraceConfig(
        model=str(model),
        corpus=str(corpus),
        warehouse=str(warehouse),
        run_name=name,
        decoding=decoding or DecodeConfig(beam=2, topk=4, max_len=14),
        device="cpu",
        **{"agreement": "all", **options},
    )
    return trace(cfg, progress=False)
