"""Serving: loopback by default, a token on every request elsewhere."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

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


def test_the_console_survives_four_memory_bombs_while_pages_answer(server) -> None:
    """Through the served app (gunicorn, the SQL console's callback): the queries fail one line
    each in their memory-capped workers; the server keeps serving pages meanwhile."""
    import threading
    import time

    from bench.dash_client import DashClient, HttpTransport
    from tests.warehouse.test_isolated import BOMBS

    host, port = server.removeprefix("http://").split(":")

    def client() -> DashClient:
        c = DashClient(HttpTransport(host, int(port), timeout=120))
        c.load_dependencies()
        return c

    messages: dict[str, str] = {}

    def bomb(query: str) -> None:
        status, resp = client().call(
            "sql", client().dep("sql-grid.rowData"), {"sql-run.n_clicks": 1}, {"sql-text.value": query}
        )
        assert status == 200, status
        messages[query] = str(resp["response"]["sql-message"]["children"])

    threads = [threading.Thread(target=bomb, args=(q,)) for q in BOMBS]
    for t in threads:
        t.start()
    pages, reader = 0, client()
    while any(t.is_alive() for t in threads):
        assert reader.page("overview", "/") is not None  # answered, not an error
        pages += 1
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert pages >= 1 and set(messages) == set(BOMBS)
    assert all("memory" in m.lower() or "busy" in m for m in messages.values()), messages
    status, resp = reader.call(
        "sql", reader.dep("sql-grid.rowData"), {"sql-run.n_clicks": 1}, {"sql-text.value": "SELECT 42 AS x"}
    )
    assert status == 200 and resp["response"].get("sql-message", {}).get("className") != "error"


def test_served_by_gunicorn_not_the_development_server(server) -> None:
    import urllib.request

    with urllib.request.urlopen(server + "/_dash-layout", timeout=30) as r:
        assert r.headers["Server"] == "gunicorn"


def test_a_fresh_worker_answers_concurrent_first_requests(warehouse_dir) -> None:
    """A browser's first page load sends the page and its scripts at once, to a worker's threads:
    Dash's first-request setup must not race them (it did: scripts answered 500)."""
    page = build(str(warehouse_dir)).server.test_client().get("/").get_data(as_text=True)
    paths = ["/", "/_dash-layout", *re.findall(r'src="(/_dash-component-suites/[^"]+)"', page)]
    for _ in range(3):
        client = build(str(warehouse_dir)).server.test_client()
        start = threading.Barrier(len(paths))

        def get(path: str, client=client, start=start) -> int:
            start.wait()
            return client.get(path).status_code

        with ThreadPoolExecutor(len(paths)) as pool:
            assert set(pool.map(get, paths)) == {200}
