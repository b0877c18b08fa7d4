"""Running the dashboard on gunicorn (a production WSGI server), with ``workers`` processes of
``threads`` threads. This module stays light: the server process that forks the workers imports
no DuckDB or LanceDB (not safe to fork once loaded); each worker builds its own app after the fork
(``dashboard.server.build``: warehouse connection, SQL workers)."""

from __future__ import annotations

import importlib
import ipaddress
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from schemas import ConfigError
from schemas.layout import read_manifest, warehouse_root

TOKEN_ENV = "BEAMSCOPE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_token(host: str, token: str | None) -> str | None:
    """The token (``token`` or $BEAMSCOPE_TOKEN); a non-loopback ``host`` must have one."""
    token = token or os.environ.get(TOKEN_ENV)
    if not is_loopback(host) and not token:
        raise ConfigError(f"serving on {host} needs a token: pass --token or set {TOKEN_ENV}")
    return token


def default_workers() -> int:
    """Server processes: one a core, at most 4. Python holds one core per process: on 2 cores with
    20 clients and no think time, 2 processes served 62 requests/s against 45 with one (bench.load)."""
    return max(1, min(4, os.cpu_count() or 1))


def serve(
    warehouse: str,
    host: str = "127.0.0.1",
    port: int = 8050,
    token: str | None = None,
    model: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    threads: int = 32,
) -> None:
    """Serve ``warehouse`` until interrupted; bad options and warehouses are refused first."""
    workers = default_workers() if workers is None else workers
    if workers < 1 or threads < 1:
        raise ConfigError(f"--workers and --threads must be at least 1 (got {workers}, {threads})")
    token = required_token(host, token)
    read_manifest(warehouse_root(warehouse))  # a bad warehouse is one line here, not a worker's traceback
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 120,  # what-if re-decoding may take a while
        "graceful_timeout": 5,
        "loglevel": "warning",
    }
    print(
        f"beamscope dashboard on http://{host}:{port}/" + (" (token required)" if token else ""), flush=True
    )
    _Gunicorn(options, dict(warehouse=warehouse, host=host, token=token, model=model, device=device)).run()


class _Gunicorn(BaseApplication):
    """gunicorn run from Python; ``load`` builds the app in each worker process."""

    def __init__(self, options: dict[str, Any], app: dict[str, Any]) -> None:
        self.options, self.app = options, app
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return importlib.import_module("dashboard.server").build(**self.app).server
