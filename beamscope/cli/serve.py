"""``beamscope serve``: serve the dashboard over a warehouse."""

from __future__ import annotations

import argparse

from beamscope.cli.options import Subparsers, add_device, add_verb


def add(sub: Subparsers) -> argparse.ArgumentParser:
    p = add_verb(
        sub,
        "serve",
        "serve the dashboard over a warehouse",
        "  beamscope serve --warehouse wh\n"
        "  BEAMSCOPE_TOKEN=secret beamscope serve --warehouse wh --host 0.0.0.0 --port 8050\n"
        "  beamscope serve --warehouse wh --model models/dates-transformer --device cpu\n"
        "Binds to 127.0.0.1 unless told otherwise; any other address requires a token\n"
        "(--token or BEAMSCOPE_TOKEN), sent as ?token=... once (then a cookie) or as a Bearer header.\n"
        "What-if re-decoding loads each run's model from the path its run recorded; --model\n"
        "overrides that path for every run.\n",
    )
    p.add_argument("--warehouse", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--token", default=None, help="access token (default: $BEAMSCOPE_TOKEN)")
    p.add_argument("--model", default=None, help="model directory for what-if (default: each run's own)")
    p.add_argument(
        "--workers", type=int, default=None, help="server processes (default: one a core, at most 4)"
    )
    p.add_argument("--threads", type=int, default=32, help="threads per server process")
    add_device(p)
    return p


def run(a: argparse.Namespace) -> int:
    from dashboard.wsgi import serve

    serve(
        a.warehouse,
        a.host,
        a.port,
        a.token,
        model=a.model,
        device=a.device,
        workers=a.workers,
        threads=a.threads,
    )
    return 0
