"""``beamscope demo``: train, trace and index the two built-in models, then serve the dashboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from beamscope.cli.options import Subparsers, add_device, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "demo",
        "train the dates Transformer and the numbers LSTM (if not cached), trace their training and test "
        "splits (numbers: greedy and beam 5), index, serve the dashboard",
        "  beamscope demo\n  beamscope demo --dir /tmp/beamscope-demo --test 500 --train 2000\n",
    )
    p.add_argument("--dir", default="demo", help="where the model and the warehouse go")
    p.add_argument("--test", type=int, default=2000, help="test sentences to trace per model")
    p.add_argument("--train", type=int, default=10000, help="training sentences traced per model")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget per model")
    p.add_argument("--no-serve", action="store_true", help="stop after tracing; do not serve the dashboard")
    p.add_argument("--port", type=int, default=8050, help="dashboard port (127.0.0.1)")
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    from beamscope.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            dir=Path(a.dir),
            n_test=a.test,
            n_train=a.train,
            minutes=a.minutes,
            device=a.device,
            serve=not a.no_serve,
            port=a.port,
        )
    )
    return 0
