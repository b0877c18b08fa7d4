"""The dashboard app as served: its marts warmed, a token on every request when bound elsewhere than
loopback, user SQL in memory-capped worker processes (``warehouse.isolated``). ``dashboard.wsgi``
runs it."""

from __future__ import annotations

import hmac

from flask import Response, request

from dashboard.app import create_app
from dashboard.wsgi import required_token
from warehouse import open_warehouse
from warehouse.isolated import IsolatedSQL
from warehouse.store import CACHED_MARTS

_COOKIE = "beamscope_token"


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
            wh.mart(name, wh.default_run())
    # user SQL (console, explorer conditions) runs in memory-capped worker processes
    app = create_app(wh, sandbox=IsolatedSQL(wh.root), model=model, device=device)
    if token:
        _require_token(app.server, token)
    _first_request(app, token)
    return app


def _first_request(app, token: str | None) -> None:
    """Dash finishes its setup on the first request (callbacks, page routes, the script paths it
    serves). Under gunicorn's threads two first requests race it ("dictionary changed size during
    iteration"), and a worker that has not rendered the page refuses the page's scripts ("dash is not
    a registered library"): each worker makes its first request itself, before it serves."""
    with app.server.test_client() as client:
        client.get("/", headers={"Authorization": f"Bearer {token}"} if token else {})


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
