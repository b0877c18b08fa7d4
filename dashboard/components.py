"""Small layout pieces shared by pages (no queries)."""

from __future__ import annotations

from typing import Any

import polars as pl
from dash import dcc, html


def labelled(label: str, control: Any, **style: str) -> html.Div:
    """A control with its label above it (``style``: the pair's CSS, e.g. ``minWidth``)."""
    return html.Div([html.Label(label), control], style=style or None)


def card(label: str, value: str) -> html.Div:
    return html.Div(
        [html.Div(value, className="value"), html.Div(label, className="label")], className="card"
    )


def run_picker(
    runs: list[str], run: str, picker_id: str, compare: tuple[list[str], str] | None = None
) -> html.Div:
    """A run dropdown; ``compare``: (the runs over the same corpus, an id) adds "compare with…"."""
    other = []
    if compare is not None:
        others, compare_id = compare
        hint = "compare with…" if others else "no other run over this corpus"
        other = [
            dcc.Dropdown(
                others, None, id=compare_id, placeholder=hint, disabled=not others, style={"width": "420px"}
            )
        ]
    return html.Div(
        [
            html.Span("run "),
            dcc.Dropdown(runs, run, id=picker_id, clearable=False, style={"width": "520px"}),
            *other,
        ],
        style={"display": "flex", "alignItems": "center", "gap": "8px"},
    )


def simple_table(df: pl.DataFrame, table_id: str) -> html.Table:
    """A table whose rows are clickable (pattern ids {table, row}); cells are rendered as text."""
    head = html.Tr([html.Th(c) for c in df.columns])
    rows = [
        html.Tr(
            [html.Td("" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))) for v in r],
            id={"table": table_id, "row": i},
            n_clicks=0,
            style={"cursor": "pointer"},
        )
        for i, r in enumerate(df.iter_rows())
    ]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="simple")
