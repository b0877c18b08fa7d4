"""Serving the dashboard on gunicorn: loopback by default; a token on every request when bound
elsewhere; user SQL in memory-capped worker processes (``warehouse.isolated``)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable
from typing import Any

from flask import Response, request
from gunicorn.app.base import BaseApplication

from dashboard.app import create_app
from schemas import ConfigError
from warehouse import open_warehouse
from warehouse.isolated import IsolatedSQL
from warehouse.store import CACHED_MARTS

TOKEN_ENV = "BEAMSCOPE_TOKEN"
_COOKIE = "beamscope_token"


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


def build(
    warehouse: str,
    host: str = "127.0.0.1",
    token: str | None = None,
    model: str | None = None,
    device: str = "auto",
):
    """The Dash app for ``warehouse``; with a non-loopback ``host`` a token is required."""
    token = required_token(host, token)
    wh = open_warehouse(warehouse)
    if wh.run_ids():  # the newest run's overview is what users open first: compute its marts now
        for name in sorted(CACHED_MARTS):
            wh.mart(name, wh.run_ids()[-1])
    # user SQL (console, explorer conditions) runs in memory-capped worker processes
    app = create_app(wh, sandbox=IsolatedSQL(wh.root), model=model, device=device)
    if token:
        _require_token(app.server, token)
    return app


def _require_token(server, token: str) -> None:
    @server.before_request
    def check() -> Response | None:
        given = (
            request.args.get("token")
            or request.cookies.get(_COOKIE)
            or request.headers.get("Authorization", "").removeprefix("Bearer ")
        )
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return Response(
                "beamscope: a valid token is required (?token=...)\n", status=401, mimetype="text/plain"
            )
        return None

    @server.after_request
    def remember(resp: Response) -> Response:
        if request.args.get("token"):
            resp.set_cookie(_COOKIE, token, httponly=True, samesite="Strict")
        return resp


def serve(
    warehouse: str,
    host: str = "127.0.0.1",
    port: int = 8050,
    token: str | None = None,
    model: str | None = None,
    device: str = "auto",
    workers: int = 1,
    threads: int = 8,
) -> None:
    """Serve on gunicorn (a production WSGI server): ``workers`` processes of ``threads`` threads,
    each process with its own app (warehouse connection, SQL workers), built after the fork."""
    if workers < 1 or threads < 1:
        raise ConfigError(f"--workers and --threads must be at least 1 (got {workers}, {threads})")
    token = required_token(host, token)  # refused before gunicorn starts
    open_warehouse(warehouse).close()  # a bad warehouse is one line here, not a worker's traceback
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 120,  # what-if re-decoding may take a while
        "graceful_timeout": 5,
        "loglevel": "warning",
    }
    where = f"http://{host}:{port}/"
    print(f"beamscope dashboard on {where}" + (" (token required)" if token else ""), flush=True)
    _Gunicorn(lambda: build(warehouse, host, token, model, device).server, options).run()


class _Gunicorn(BaseApplication):
    """gunicorn run from Python: ``factory`` builds the WSGI app in each worker process."""

    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.factory, self.options = factory, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory()
