"""``beamscope trace --engine ray`` against the local engine: the same corpus, the same model.

local:        the local engine, 1 torch thread.
ray, N CPU:   a Ray instance started by the trace itself (its start-up is timed too), N actor
              workers of 1 CPU and 1 torch thread each.
ray, 1 GPU:   (when CUDA is present) one worker with a whole GPU, against the local engine on it.

Each run traces into a fresh temporary warehouse (removed after). Figures: wall seconds,
sentences/s, speed-up over the local engine of the same device, seconds until the first part is
committed, and peak resident memory (VmHWM): the driver's own (reset before each run, so it starts
from what the bench process holds by then), and that of the Ray processes this bench started,
sampled every 0.2 s: the largest sum and the largest single ``ray::`` (worker) process, and the
largest sum over all of them (Ray's daemons too). A Ray run is row-equal when its ``sentences``
(sent_id, hypothesis) match the local run's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import dates_model
from pipeline.beam import DecodeConfig
from pipeline.models import resolve_device
from pipeline.ray_engine import RayEngine
from pipeline.trace import TraceConfig, trace
from pipeline.writer.run import RunWriter

SENTENCES = 20_000
DECODING = DecodeConfig(beam=5, max_len=20)
PART_SIZE = 1000  # 20 parts: enough for 2 workers to share
SAMPLE_S = 0.2


def _descendants() -> dict[int, str]:
    """Command line of every process below this one (Ray's daemons and their workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        todo += children.get(pid, [])
    return found


def _hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set (VmHWM) of a process, in MB; 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RayPeaks(threading.Thread):
    """Samples the peak memory of this process' descendants until the block ends."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.workers_mb = self.worker_mb = self.all_mb = 0.0

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            hwm = {pid: (cmd, _hwm_mb(pid)) for pid, cmd in _descendants().items()}
            workers = [mb for cmd, mb in hwm.values() if cmd.startswith("ray::")]
            self.workers_mb = max(self.workers_mb, sum(workers))
            self.worker_mb = max(self.worker_mb, *workers, 0.0)
            self.all_mb = max(self.all_mb, sum(mb for _, mb in hwm.values()))

    def __enter__(self) -> RayPeaks:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


@contextlib.contextmanager
def _first_part(marks: dict[str, float]) -> Iterator[None]:
    """Record in ``marks['first']`` when the driver first marks a part done (either engine)."""
    mark_done = RunWriter.mark_done

    def marked(self: RunWriter, part: int) -> None:
        marks.setdefault("first", time.perf_counter())
        mark_done(self, part)

    RunWriter.mark_done = marked  # type: ignore[method-assign]
    try:
        yield
    finally:
        RunWriter.mark_done = mark_done  # type: ignore[method-assign]


def _sentences(wh: Path) -> pa.Table:
    """The run's (sent_id, hypothesis) rows, in sent_id order."""
    parts = sorted((wh / "tables" / "sentences").glob("*/*.parquet"))
    tables = [pq.read_table(p, columns=["sent_id", "hypothesis"]) for p in parts]
    return pa.concat_tables(tables).sort_by("sent_id")


def timed_run(model: Path, corpus: str, device: str, engine: RayEngine | None) -> tuple[dict, pa.Table]:
    """One trace into a fresh warehouse (removed after): its figures and its sentences."""
    marks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="beamscope-ray-bench-", ignore_cleanup_errors=True) as tmp:
        wh = Path(tmp) / "wh"
        cfg = TraceConfig(
            model=str(model.resolve()),
            corpus=corpus,
            warehouse=str(wh),
            decoding=DECODING,
            part_size=PART_SIZE,
            device=device,
            threads=1,
            neighbours_run=None,
            engine=engine,
        )
        Path("/proc/self/clear_refs").write_text("5")  # the driver's peak (VmHWM) starts again here
        with RayPeaks() as peaks, _first_part(marks):
            start = time.perf_counter()
            n = trace(cfg, progress=False).n_sentences
            seconds = time.perf_counter() - start
        rows = _sentences(wh)
    figures = {
        "seconds": seconds,
        "sentences_per_s": n / seconds,
        "first_part_s": marks.get("first", float("nan")) - start,
        "driver_peak_mb": _hwm_mb(),
        "ray_workers_peak_mb": peaks.workers_mb,
        "ray_worker_max_mb": peaks.worker_mb,
        "ray_all_peak_mb": peaks.all_mb,
    }
    return figures, rows


def main(device_name: str = "auto", sentences: int = SENTENCES) -> dict[str, dict]:
    device = resolve_device(device_name)
    model = dates_model(device)
    corpus = f"task:dates:test:{sentences}"
    runs: dict[str, tuple[dict, pa.Table]] = {"local": timed_run(model, corpus, "cpu", None)}
    for n, name in ((1, "ray, 1 CPU worker"), (2, "ray, 2 CPU workers")):
        runs[name] = timed_run(model, corpus, "cpu", RayEngine(workers=n))
    gpu = device.type == "cuda"
    if gpu:
        runs["local, GPU"] = timed_run(model, corpus, device_name, None)
        runs["ray, 1 GPU worker"] = timed_run(model, corpus, device_name, RayEngine(gpus_per_worker=1.0))
    figures = {}
    for name, (row, rows) in runs.items():
        base, base_rows = runs["local, GPU" if "GPU" in name else "local"]
        equal = rows.equals(base_rows)
        figures[name] = row | {"speed_up": base["seconds"] / row["seconds"], "row_equal": equal}
    _print(figures, corpus)
    if not gpu:
        why = f"the device is {device}" if torch.cuda.is_available() else "no GPU is present here"
        print(f"GPU workers not measured: {why}")
    return figures


def _print(figures: dict[str, dict], corpus: str) -> None:
    print(f"== Ray engine ({corpus}, beam {DECODING.beam}, part size {PART_SIZE}, 1 torch thread) ==")
    print(
        "run                  wall s  sent/s  speed-up  first part s  driver MB  "
        "ray:: sum MB  ray:: max MB  all Ray MB  row-equal"
    )
    for name, f in figures.items():
        ray = name.startswith("ray")
        mem = (
            f"{f['ray_workers_peak_mb']:12.0f}  {f['ray_worker_max_mb']:12.0f}  {f['ray_all_peak_mb']:10.0f}"
            if ray
            else f"{'-':>12}  {'-':>12}  {'-':>10}"
        )
        print(
            f"{name:<19} {f['seconds']:7.1f}  {f['sentences_per_s']:6.0f}  {f['speed_up']:7.2f}x  "
            f"{f['first_part_s']:12.1f}  {f['driver_peak_mb']:9.0f}  {mem}  "
            f"{('yes' if f['row_equal'] else 'no') if ray else '-'}"
        )


if __name__ == "__main__":
    main()
