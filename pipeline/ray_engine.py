"""``beamscope trace --engine ray``: a trace's parts decoded by an actor pool on a Ray cluster.

The driver (``pipeline.trace``) plans the run exactly as the local engine does: same corpus
numbering, same parts, same ``runs`` row. Ray Data feeds the parts still to do, as items (no read
tasks: on a small cluster read tasks starve beside an actor pool as large as the CPUs, ray issue
44687), to an actor pool of model replicas (``PartTracer``: one model load per worker). A worker
traces a part with the local engine's own code (``trace_plan_part``) and writes its Parquet files
under their final names and its vectors to staging files; the driver adds those vectors to
LanceDB and marks the part done as each part comes back, so the vectors, the manifest and the
run's completion are written by one process, as in a local trace. A retried part rewrites
identical files; a driver started again resumes after the parts the manifest lists as done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas import BeamscopeError, ConfigError

if TYPE_CHECKING:
    from tqdm import tqdm

    from pipeline.trace import TracePlan
    from pipeline.writer.run import RunWriter

MAX_RETRIES = 3  # restarts of a dead worker, and retries of the part it held
CONNECT_TIMEOUT_S = 5.0
_WORKER_LINE = re.compile(r"WorkerError: (part \d+ failed in a Ray worker: [^\n]*)")


class WorkerError(BeamscopeError):
    """A part failed inside a Ray worker (an error in the model or the data, not a lost worker)."""


@dataclass(frozen=True)
class RayEngine:
    """Options of ``--engine ray``."""

    address: str | None = None  # None: a Ray instance started for this trace; 'auto' | HOST:PORT: join one
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def check(self) -> RayEngine:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers})")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must not be negative (got {self.gpus_per_worker})")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"--cpus-per-worker must be positive (got {self.cpus_per_worker})")
        return self

    def threads(self) -> int:
        """Torch threads of a worker unless ``--threads`` says: its CPUs (at least 1)."""
        return max(1, int(self.cpus_per_worker))

    def describe(self) -> dict[str, Any]:
        return {
            "name": "ray",
            "workers": self.workers,
            "gpus_per_worker": self.gpus_per_worker,
            "cpus_per_worker": self.cpus_per_worker,
        }


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must be auto or HOST:PORT (got {address!r})")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Silence what native code writes to stderr (file descriptor 2) inside the block."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect_cluster(engine: RayEngine) -> Cluster:
    """Join (or start) the Ray cluster and check it can hold the pool; nothing is written."""
    import ray

    if engine.address not in (None, "auto"):
        _check_reachable(engine.address)
    # Ray's C++ core logs a known, harmless warning for every actor pool (ray issue 53727) on stderr;
    # its logs stay in the cluster's log directory
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    with warnings.catch_warnings(), _stderr_to_devnull():  # and it says so on stderr at start-up
        # Ray starts its processes with fork+exec, which lancedb's fork warning does not concern
        warnings.filterwarnings("ignore", message="lancedb fork support")
        try:
            ray.init(
                address=engine.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                ignore_reinit_error=True,
            )
        except ConnectionError as e:
            unauthenticated = "Failed to connect" in str(e) and not os.environ.get("RAY_AUTH_MODE")
            hint = (
                "; a cluster with token authentication needs RAY_AUTH_MODE=token" if unauthenticated else ""
            )
            first = (str(e).splitlines() or [""])[0]
            raise ConfigError(
                f"--address {engine.address}: cannot join the Ray cluster ({first}{hint})"
            ) from None
    resources = ray.cluster_resources()
    need_cpus = engine.workers * engine.cpus_per_worker
    need_gpus = engine.workers * engine.gpus_per_worker
    if need_gpus > resources.get("GPU", 0):
        ray.shutdown()
        raise ConfigError(
            f"--workers {engine.workers} x --gpus-per-worker {engine.gpus_per_worker} needs "
            f"{need_gpus:g} GPUs; the Ray cluster has {resources.get('GPU', 0):g}"
        )
    if need_cpus > resources.get("CPU", 0):
        ray.shutdown()
        raise ConfigError(
            f"--workers {engine.workers} x --cpus-per-worker {engine.cpus_per_worker:g} needs "
            f"{need_cpus:g} CPUs; the Ray cluster has {resources.get('CPU', 0):g}"
        )
    return Cluster(engine)


class PartTracer:
    """A Ray Data actor: loads the model once, then traces the parts it is handed."""

    def __init__(self, plan: TracePlan, threads: int) -> None:
        import torch

        from pipeline.models import for_decoding, load_model, resolve_device
        from pipeline.neighbours import training_states
        from pipeline.writer.run import RunWriter

        torch.set_num_threads(threads)
        cfg = plan.cfg
        self.plan = plan
        self.model = for_decoding(load_model(cfg.model, resolve_device(cfg.device)), plan.decoding)[0]
        run = plan.neighbours_run
        self.training = training_states(plan.root, run, cfg.bank_size, build=False) if run else None
        self.writer = RunWriter(plan.root, plan.run_id)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[int]]:
        from pipeline.trace import trace_plan_part

        out: dict[str, list[int]] = {"part": [], "lo": [], "hi": []}
        for part, blob in zip(batch["part"], batch["chunk"], strict=True):
            part = int(part)
            try:
                tables, vectors, (lo, hi) = trace_plan_part(
                    self.model, self.plan, pickle.loads(blob), self.training
                )
            except Exception as e:  # the driver prints this one line
                raise WorkerError(f"part {part} failed in a Ray worker: {type(e).__name__}: {e}") from None
            self.writer.write_tables(part, tables)
            self.writer.stage_vectors(part, vectors)
            for key, value in (("part", part), ("lo", lo), ("hi", hi)):
                out[key].append(value)
        return out


# the S3 endpoint and region a driver was pointed at; credentials are not sent (workers use their own)
FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def forwarded_env() -> dict[str, str]:
    """What workers get of the driver's environment: its ``BEAMSCOPE_*`` settings (the crash hook's
    among them) and its S3 endpoint and region."""
    return {k: v for k, v in os.environ.items() if k.startswith("BEAMSCOPE_") or k in FORWARDED_AWS}


class Cluster:
    """A joined Ray cluster that traces parts with an actor pool."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine

    def close(self) -> None:
        """Leave the cluster (a cluster this trace started stops)."""
        import ray

        ray.shutdown()

    def trace_parts(self, plan: TracePlan, todo: list[int], writer: RunWriter, bar: tqdm) -> None:
        """Trace ``todo`` on the pool; commit each part as it comes back."""
        import dataclasses

        import ray
        from ray.data import ActorPoolStrategy, DataContext

        engine = self.engine
        for name in ("ray", "ray.data"):  # progress is the trace's own bar; a failure its one line
            logging.getLogger(name).setLevel(logging.CRITICAL)
        DataContext.get_current().enable_progress_bars = False
        if not todo:
            return
        items = [{"part": p, "chunk": pickle.dumps(plan.chunk(p))} for p in todo]
        worker_plan = dataclasses.replace(plan, examples=[])  # each part travels with its item
        threads = plan.cfg.threads or engine.threads()
        with warnings.catch_warnings():  # bounded restarts are ray_remote_args in Ray 2.60 (pinned)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                PartTracer,
                fn_constructor_kwargs={"plan": worker_plan, "threads": threads},
                batch_size=1,
                compute=ActorPoolStrategy(size=engine.workers),
                num_cpus=engine.cpus_per_worker,
                num_gpus=engine.gpus_per_worker or None,
                runtime_env={"env_vars": forwarded_env()},
                max_restarts=MAX_RETRIES,
                max_task_retries=MAX_RETRIES,
            )
        try:
            for row in ds.iter_rows():
                part = int(row["part"])
                writer.commit_staged(part, (int(row["lo"]), int(row["hi"])))
                bar.update(len(plan.chunk(part)))
        except BeamscopeError:  # the driver's own (committing a part)
            raise
        except Exception as e:
            raise _worker_error(e) from None


def _worker_error(e: BaseException) -> BeamscopeError:
    """The one-line error of a failed Ray execution: the worker's own ``WorkerError`` line, which
    Ray passes on inside the text of the exceptions it wraps it in."""
    found = _WORKER_LINE.search(str(e))
    if found:
        return WorkerError(found.group(1))
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return BeamscopeError(f"the Ray trace failed: {type(e).__name__}: {first}")
