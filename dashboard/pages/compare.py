"""Two runs over the same corpus: score deltas with paired-bootstrap intervals, the sentences B fixed
and broke (counts open the explorer, rows the two-run sentence view), token accuracy by bucket,
confusions gone and new."""

from __future__ import annotations

from urllib.parse import urlencode

import dash
from dash import Input, Output, callback, dcc, html, no_update

from dashboard import figures, ids, queries
from dashboard.state import warehouse
from warehouse import Warehouse
from warehouse.compare import (
    OUTCOME_LABELS,
    SAMPLES,
    Comparison,
    PairError,
    cached_comparison,
    check_pair,
    same_corpus_runs,
)

dash.register_page(__name__, path="/compare", name="Compare", order=3)

LIST_ROWS = 50  # rows of each list on the page (the explorer has them all)


def pair_href(a: str, b: str, sent_id: int) -> str:
    """The two-run sentence view of one sentence."""
    return "/compare/sentence?" + urlencode({"a": a, "b": b, "sent": sent_id})


def explorer_href(a: str, b: str, outcome: str) -> str:
    """The explorer over run A's sentences of one outcome against run B."""
    return "/sentences?" + urlencode({"run": a, "vs": b, "outcome": outcome})


def layout(a: str | None = None, b: str | None = None, **_: str) -> html.Div:
    wh = warehouse()
    if not wh.run_ids():
        return html.Div("This warehouse has no complete runs yet.", className="page")
    head = [dcc.Location(id=ids.COMPARE_GO, refresh="callback-nav"), _pickers(wh, a, b)]
    try:
        c = cached_comparison(wh, *check_pair(wh, a, b))
    except PairError as e:
        message = html.P(e.message, id=ids.COMPARE_MESSAGE, className="error")
        return html.Div([*head, message], className="page")
    return html.Div([*head, *_summary(wh, c), _charts(wh, c), *_lists(c)], className="page")


def _pickers(wh: Warehouse, a: object, b: object) -> html.Div:
    runs = wh.run_ids()
    a = a if a in runs else None
    others = same_corpus_runs(wh, a) if a else runs
    b = b if b in others else None
    swap = dcc.Link("swap A and B", href="/compare?" + urlencode({"a": b, "b": a})) if a and b else None
    style = {"width": "420px"}
    return html.Div(
        [
            html.Span("A "),
            dcc.Dropdown(runs, a, id=ids.COMPARE_A, clearable=False, placeholder="run A", style=style),
            html.Span("B "),
            dcc.Dropdown(others, b, id=ids.COMPARE_B, clearable=False, placeholder="run B", style=style),
            swap,
        ],
        style={"display": "flex", "alignItems": "center", "gap": "8px"},
    )


def _summary(wh: Warehouse, c: Comparison) -> list:
    corpus = queries.run_info(wh, c.run_a)["corpus"]
    note = (
        f"{c.pairs.height:,} sentences of corpus {corpus} with references, paired; B - A with 95% "
        f"paired-bootstrap intervals and p-values ({SAMPLES} resamples)"
    )
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    num = lambda x: f"{x:.2f}"  # noqa: E731
    rows = []
    for m in c.scores.iter_rows(named=True):
        f = pct if m["metric"] == "exact_match" else num
        sign = lambda x, f=f: ("+" if x > 0 else "") + f(x)  # noqa: E731
        better = " (lower is better)" if m["lower_is_better"] else ""
        rows.append(
            html.Tr(
                [
                    html.Td(m["metric"] + better),
                    *(html.Td(f(m[k])) for k in ("a", "b")),
                    html.Td(sign(m["delta"])),
                    html.Td(f"[{sign(m['delta_low'])}, {sign(m['delta_high'])}]"),
                    html.Td(f"{m['p_value']:.4f}"),
                ]
            )
        )
    head = html.Tr([html.Th(h) for h in ("metric", "A", "B", "B - A", "95% interval", "p")])
    cards = [
        html.Div(
            [
                dcc.Link(f"{c.counts[o]:,}", href=explorer_href(c.run_a, c.run_b, o), className="value"),
                html.Div(f"{o}: {label.format(a='A', b='B')}", className="label"),
            ],
            id=f"{ids.COMPARE_COUNT}-{o}",
            className="card",
        )
        for o, label in OUTCOME_LABELS.items()
    ]
    return [
        html.H3(f"A = {c.run_a}  vs  B = {c.run_b}"),
        html.P(note, className="muted"),
        html.Table([html.Thead(head), html.Tbody(rows)], id=ids.COMPARE_SCORES, className="simple"),
        html.Div(cards, className="cards"),
    ]


def _charts(wh: Warehouse, c: Comparison) -> html.Div:
    a, b = queries.buckets(wh, c.run_a), queries.buckets(wh, c.run_b)
    names = (f"A: {c.run_a}", f"B: {c.run_b}")
    freq = figures.bucket_pair_chart(a, b, "ref_token_frequency", "Token F by training frequency", names)
    length = figures.bucket_pair_chart(a, b, "source_length", "Token F by source length", names)
    return html.Div(
        [
            html.Div(dcc.Graph(id=ids.COMPARE_FREQ, figure=freq), className="panel"),
            html.Div(dcc.Graph(id=ids.COMPARE_LEN, figure=length), className="panel"),
        ],
        className="grid2",
    )


def _table(header: list[str], rows: list[list], table_id: str) -> html.Table:
    body = [html.Tr([html.Td(v) for v in r]) for r in rows] or [html.Tr(html.Td("none", colSpan=len(header)))]
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(body)], id=table_id, className="simple"
    )


def _commas(items: list) -> list:
    return [x for i, item in enumerate(items) for x in ([", "] if i else []) + [item]]


def _lists(c: Comparison) -> list:
    link = lambda s: dcc.Link(str(s), href=pair_href(c.run_a, c.run_b, s))  # noqa: E731
    panels = []
    for outcome, table_id in (("fixed", ids.COMPARE_FIXED), ("broken", ids.COMPARE_BROKEN)):
        df = c.sentences(outcome)
        rows = [
            [link(r["sent_id"]), r["reference"], r["hyp_a"], r["hyp_b"]]
            for r in df.head(LIST_ROWS).iter_rows(named=True)
        ]
        more = (
            dcc.Link(f"all {df.height:,} in the explorer", href=explorer_href(c.run_a, c.run_b, outcome))
            if df.height > LIST_ROWS
            else None
        )
        title = f"{outcome.capitalize()} in B: {OUTCOME_LABELS[outcome].format(a='A', b='B')} ({df.height:,})"
        panels.append(
            html.Div(
                [html.H4(title), _table(["sentence", "reference", "A", "B"], rows, table_id), more],
                className="panel",
            )
        )
    for title, df, table_id in (
        ("Confusions gone in B (made by A only; examples from A)", c.confusions_gone, ids.COMPARE_GONE),
        ("Confusions new in B (made by B only; examples from B)", c.confusions_new, ids.COMPARE_NEW),
    ):
        rows = [
            [
                r["ref_token"],
                r["hyp_token"],
                str(r["n"]),
                html.Span(_commas([link(s) for s in r["example_sent_ids"]])),
            ]
            for r in df.head(LIST_ROWS).iter_rows(named=True)
        ]
        header = ["reference", "produced", "n", "examples"]
        panels.append(
            html.Div([html.H4(f"{title}: {df.height:,}"), _table(header, rows, table_id)], className="panel")
        )
    return [html.Div(panels[:2], className="grid2"), html.Div(panels[2:], className="grid2")]


@callback(
    Output(ids.COMPARE_GO, "href"),
    Input(ids.COMPARE_A, "value"),
    Input(ids.COMPARE_B, "value"),
    prevent_initial_call=True,
)
def pick(a: str | None, b: str | None):
    """A picked run reloads the page with it (B kept only while it reads A's corpus)."""
    if not a:
        return no_update
    others = same_corpus_runs(warehouse(), a)
    return "/compare?" + urlencode({"a": a, **({"b": b} if b in others else {})})
