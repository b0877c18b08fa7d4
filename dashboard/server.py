"""Serving the dashboard: loopback by default; a token on every request when bound elsewhere."""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Response, request

from dashboard.app import create_app
from schemas import ConfigError
from warehouse import open_warehouse
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


def build(
    warehouse: str,
    host: str = "127.0.0.1",
    token: str | None = None,
    model: str | None = None,
    device: str = "auto",
):
    """The Dash app for ``warehouse``; with a non-loopback ``host`` a token is required."""
    token = token or os.environ.get(TOKEN_ENV)
    if not is_loopback(host) and not token:
        raise ConfigError(f"serving on {host} needs a token: pass --token or set {TOKEN_ENV}")
    wh = open_warehouse(warehouse)
    if wh.run_ids():  # the newest run's overview is what users open first: compute its marts now
        for name in sorted(CACHED_MARTS):
            wh.mart(name, wh.run_ids()[-1])
    app = create_app(wh, model=model, device=device)
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
) -> None:
    app = build(warehouse, host, token, model, device)
    where = f"http://{host}:{port}/"
    print(
        f"beamscope dashboard on {where}"
        + (" (token required)" if token or os.environ.get(TOKEN_ENV) else ""),
        flush=True,
    )
    app.run(host=host, port=port, debug=False, threaded=True)
