"""Serving: loopback by default, a token on every request elsewhere."""

import pytest

from dashboard.server import build
from dashboard.wsgi import is_loopback
from schemas import ConfigError


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_binding_elsewhere_needs_a_token(warehouse_dir, monkeypatch) -> None:
    monkeypatch.delenv("BEAMSCOPE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs a token"):
        build(str(warehouse_dir), host="0.0.0.0")


def test_every_request_needs_the_token(warehouse_dir) -> None:
    app = build(str(warehouse_dir), host="0.0.0.0", token="s3cret")
    client = app.server.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/_dash-layout").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    ok = client.get("/?token=s3cret")
    assert ok.status_code == 200
    assert client.get("/_dash-layout").status_code == 200  # the cookie set by the first request
    fresh = app.server.test_client()
    assert fresh.get("/_dash-layout", headers={"Authorization": "Bearer s3cret"}).status_code == 200
