"""Load test of the dashboard on loopback: concurrent clients for a bounded time over the overview,
the sentence explorer, sentence pages and the SQL console; requests served, latency, errors.

``beamscope serve`` is started here (127.0.0.1, a free port) over ``demo/warehouse``, or, when that
does not open, over a smaller warehouse traced here with the bench's dates model (cached under
``.beamscope/bench/``). Each client plays what a browser does, over HTTP with keep-alive: the page
callback of Dash Pages (``_pages_location`` -> ``_pages_content``), then every server callback the
returned layout fires on load (as the renderer does: inputs present in the layout, not
``prevent_initial_call``), then the page's own request: a block of grid rows (explorer) or a query
(SQL console). Latency is per HTTP request; an error is a failed request, a status other than
200/204, or a page/callback that answers with the dashboard's own error text.

    python -m bench.load                      # 20 clients, 60 s
    python -m bench.load --clients 5 --seconds 10
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.dash_client import DashClient, HttpTransport, component_props, texts
from schemas import BeamscopeError

DEMO = Path("demo/warehouse")
TARGET_MS, STRESS_TARGET_MS = 500, 1500  # p95 with people's think time, and with none (a stress test)
CACHE = Path(".beamscope/bench/load-warehouse")
SQL_POOL = [
    "SELECT blamed_stage, count(*) AS n FROM sentences WHERE run_id = '{run}' GROUP BY 1 ORDER BY 2 DESC",
    "SELECT sent_id, source, hypothesis, chrf FROM sentences WHERE run_id = '{run}' ORDER BY chrf LIMIT 50",
    "SELECT token, count(*) AS n, avg(prob) AS p FROM target_steps WHERE run_id = '{run}' "
    "GROUP BY 1 ORDER BY 2 DESC LIMIT 20",
    "SELECT * FROM error_summary WHERE run_id = '{run}'",
]


# -- the warehouse and the server -----------------------------------------------------------------
def load_warehouse(device_name: str) -> tuple[Path, str]:
    """``demo/warehouse`` when it opens with a complete run; else a smaller one traced here."""
    from warehouse import open_warehouse

    try:
        with open_warehouse(DEMO) as wh:
            if wh.run_ids():
                return DEMO, "demo warehouse"
            why = "it has no complete run"
    except BeamscopeError as e:
        why = str(e)
    print(f"load: not using {DEMO} ({why}); tracing a smaller warehouse into {CACHE}", flush=True)
    from bench.common import dates_model
    from pipeline.beam import DecodeConfig
    from pipeline.models import resolve_device
    from pipeline.trace import TraceConfig, trace

    model = dates_model(resolve_device(device_name))
    for corpus in ("task:dates:train:2000", "task:dates:test:500"):  # resumes / no-op when cached
        cfg = TraceConfig(
            model=str(model),
            corpus=corpus,
            warehouse=str(CACHE),
            decoding=DecodeConfig(beam=5, max_len=20),
            device=device_name,
        )
        trace(cfg)
    from warehouse import write_duckdb_file

    write_duckdb_file(CACHE)
    return CACHE, "bench warehouse (2,000 train + 500 test sentences)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    warehouse: Path, device_name: str, *options: str, timeout: float = 300
) -> tuple[subprocess.Popen, int]:
    """``beamscope serve [options]`` on 127.0.0.1 and a free port; returns once it answers."""
    port = _free_port()
    exe = Path(sys.executable).parent / "beamscope"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "beamscope.cli"]
    cmd += ["serve", "--warehouse", str(warehouse), "--port", str(port), "--device", device_name, *options]
    # the server logs every request: to a file, as an undrained pipe would fill and stall it
    with tempfile.NamedTemporaryFile("w", prefix="beamscope-serve-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"beamscope serve exited: {Path(log.name).read_text()[-2000:]}")
        try:
            con = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            con.request("GET", "/_dash-layout")
            if con.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("beamscope serve did not answer in time")


# -- the load -------------------------------------------------------------------------------------
@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, kind: str, seconds: float, ok: bool, note: str) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if not ok:
                self.errors.append(f"{kind}: {note}")

    def error(self, kind: str, note: str) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {note}")


@dataclass(frozen=True)
class Targets:
    run: str
    sent_ids: list[int]


def _pick_targets(warehouse: Path) -> Targets:
    from warehouse import open_warehouse

    with open_warehouse(warehouse) as wh:
        runs = wh.runs()
        tests = runs.filter(runs["split"] != "train")["run_id"].to_list() or runs["run_id"].to_list()
        run = tests[-1]
        ids = wh.sql("SELECT sent_id FROM sentences WHERE run_id = ? ORDER BY sent_id", [run])["sent_id"]
    return Targets(run, ids.to_list())


def _scenario(client: DashClient, rec: Recorder, rng: random.Random, t: Targets, name: str) -> None:
    if name == "overview":
        client.request("overview", "GET", f"/?run={t.run}")
        layout = client.page("overview", "/", f"?run={t.run}")
        _check_page(rec, "overview", layout)
        client.initial_callbacks("overview", layout)
    elif name == "explorer":
        layout = client.page("explorer", "/sentences", f"?run={t.run}")
        _check_page(rec, "explorer", layout)
        client.initial_callbacks("explorer", layout)
        props = component_props(layout) if layout else {}
        if "grid" in props:
            start = rng.choice([0, 0, 100, 200])
            request = {"startRow": start, "endRow": start + 100, "sortModel": [], "filterModel": {}}
            status, resp = client.call(
                "explorer_rows",
                client.dep("grid.getRowsResponse"),
                {"grid.getRowsRequest": request},
                {"filters.data": props.get("filters", {}).get("data")},
            )
            if resp is not None and resp["response"].get("grid-error", {}).get("children"):
                rec.error("explorer_rows", str(resp["response"]["grid-error"]["children"]))
    elif name == "sentence":
        sid = rng.choice(t.sent_ids)
        layout = client.page("sentence", f"/run/{t.run}/sentence/{sid}")
        _check_page(rec, "sentence", layout)
        client.initial_callbacks("sentence", layout)
    else:
        query = rng.choice(SQL_POOL).format(run=t.run)
        status, resp = client.call(
            "sql", client.dep("sql-grid.rowData"), {"sql-run.n_clicks": 1}, {"sql-text.value": query}
        )
        if resp is not None and resp["response"].get("sql-message", {}).get("className") == "error":
            rec.error("sql", str(resp["response"]["sql-message"]["children"]))


def _check_page(rec: Recorder, kind: str, layout: Any) -> None:
    if layout is None:
        return  # the failed request is counted already
    shown = " ".join(texts(layout))
    if "Not found" in shown or "Traceback" in shown:
        rec.error(kind, shown[:200])


def run_load(
    port: int, targets: Targets, clients: int, seconds: float, think: float = 2.0, seed: int = 0
) -> dict[str, Any]:
    """``clients`` users browse for ``seconds``; each reads a page for a random 0..2*``think``
    seconds (mean ``think``) before the next, as people do; ``think`` 0 is a stress test."""
    rec = Recorder()
    deadline = time.monotonic() + seconds
    views = defaultdict(int)

    def user(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        client = DashClient(HttpTransport("127.0.0.1", port), rec)
        try:
            client.load_dependencies()
        except (OSError, RuntimeError) as e:
            rec.error("dependencies", str(e))
            return
        names = ["overview", "explorer", "sentence", "sentence", "sql"]
        while time.monotonic() < deadline:
            name = rng.choice(names)
            try:
                _scenario(client, rec, rng, targets, name)
                with rec.lock:
                    views[name] += 1
                time.sleep(min(rng.uniform(0, 2 * think), max(0.0, deadline - time.monotonic())))
            except (OSError, http.client.HTTPException):
                pass  # counted (with its latency) by the request that failed
            except (ValueError, KeyError, TypeError) as e:  # an answer that is not what a page gets
                rec.error(name, f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(clients)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 120)
    wall = time.monotonic() - start
    return summarise(rec, wall, clients, seconds, dict(views))


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def summarise(
    rec: Recorder, wall: float, clients: int, seconds: float, views: dict[str, int]
) -> dict[str, Any]:
    everything = [x for xs in rec.latencies.values() for x in xs]
    kinds = {
        k: {
            "requests": len(v),
            "p50_ms": 1000 * _pct(v, 0.5),
            "p95_ms": 1000 * _pct(v, 0.95),
            "max_ms": 1000 * max(v),
        }
        for k, v in sorted(rec.latencies.items())
    }
    return {
        "clients": clients,
        "seconds": seconds,
        "wall_s": wall,
        "requests": len(everything),
        "requests_per_s": len(everything) / wall if wall else 0.0,
        "p50_ms": 1000 * _pct(everything, 0.5),
        "p95_ms": 1000 * _pct(everything, 0.95),
        "max_ms": 1000 * max(everything, default=float("nan")),
        "errors": len(rec.errors),
        "error_examples": rec.errors[:5],
        "page_views": views,
        "by_kind": kinds,
    }


def report(r: dict[str, Any]) -> str:
    target = TARGET_MS if r["think_s"] > 0 else STRESS_TARGET_MS
    lines = [
        f"dashboard load: {r['clients']} clients for {r['seconds']:.0f} s on loopback over {r['warehouse']} "
        f"({r['warehouse_kind']}, run {r['run']}), think time {r['think_s']:g} s on average, "
        f"server workers {r['workers'] or 'default'}",
        f"  requests served {r['requests']:,} ({r['requests_per_s']:.1f}/s), page views "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["page_views"].items())),
        f"  latency p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms; "
        f"errors {r['errors']}   (target: p95 < {target:.0f} ms, 0 errors: "
        f"{'met' if r['p95_ms'] < target and r['errors'] == 0 else 'NOT met'})",
        f"  {'request':<22}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}",
    ]
    for k, v in r["by_kind"].items():
        lines.append(f"  {k:<22}{v['requests']:>7}{v['p50_ms']:>9.0f}{v['p95_ms']:>9.0f}{v['max_ms']:>9.0f}")
    lines += [f"  error: {e}" for e in r["error_examples"]]
    return "\n".join(lines)


def main(
    device_name: str = "auto",
    clients: int = 20,
    seconds: float = 60.0,
    warehouse: str | None = None,
    think: float = 2.0,
    workers: int | None = None,
) -> dict[str, Any]:
    """Serve the demo warehouse (or ``warehouse``) and load it; print and return the figures."""
    if warehouse is not None:
        path, kind = Path(warehouse), "given warehouse"
    else:
        path, kind = load_warehouse(device_name)
    warehouse = str(path)
    targets = _pick_targets(path)
    proc, port = start_server(path, device_name, *(["--workers", str(workers)] if workers else []))
    try:
        result = run_load(port, targets, clients, seconds, think)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    result.update(warehouse=warehouse, warehouse_kind=kind, run=targets.run, think_s=think, workers=workers)
    print(report(result), flush=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warehouse", default=None, help="default: demo/warehouse, else one traced here")
    parser.add_argument(
        "--think", type=float, default=2.0, help="mean seconds a user reads a page (0: stress)"
    )
    parser.add_argument("--workers", type=int, default=None, help="server processes (default: serve's)")
    args = parser.parse_args()
    main(args.device, args.clients, args.seconds, args.warehouse, args.think, args.workers)
