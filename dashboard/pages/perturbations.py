"""Perturbation runs (``beamscope perturb``) against their originals: per run its kind, expectation,
counts and rates, and its worst flips (right in the original, wrong as a variant), each linking to
the two-run sentence view of the original and the variant."""

from __future__ import annotations

from urllib.parse import urlencode

import dash
import polars as pl
from dash import dcc, html

from dashboard import ids
from dashboard.state import warehouse
from warehouse.perturbations import perturbation_summaries, worst_flips

dash.register_page(__name__, path="/perturbations", name="Perturbations", order=4)

FLIP_ROWS = 10  # worst flips shown per run
COLUMNS = {  # summary column -> header
    "run_id": "run",
    "of": "perturbs",
    "kind": "kind",
    "expect": "expect",
    "n": "sentences",
    "n_skipped": "skipped",
    "changed_share": "output changed",
    "invariance_failures": "invariance failures",
    "invariance_failure_rate": "failure rate",
    "stayed": "stayed (should change)",
    "stayed_rate": "stayed rate",
    "exact_match": "variant exact match",
}


def pair_href(original: str, variant: str, sent_id: int) -> str:
    """The two-run sentence view of one sentence: A the original, B the variant."""
    return "/compare/sentence?" + urlencode({"a": original, "b": variant, "sent": sent_id})


def layout(**_: str) -> html.Div:
    wh = warehouse()
    runs = perturbation_summaries(wh)
    if runs.height == 0:
        return html.Div("This warehouse has no perturbation runs (see beamscope perturb).", className="page")
    flips = [
        _flips(i, r["of"], r["run_id"], worst_flips(wh, r["run_id"], FLIP_ROWS))
        for i, r in enumerate(runs.iter_rows(named=True))
    ]
    return html.Div([html.H3("Perturbation runs"), _summary(runs), *flips], className="page")


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if column.endswith(("_share", "_rate")) or column == "exact_match":
        return f"{100 * float(value):.1f}%"
    return str(value)


def _summary(runs: pl.DataFrame) -> html.Table:
    head = html.Tr([html.Th(h) for h in COLUMNS.values()])
    body = [html.Tr([html.Td(_cell(c, r[c])) for c in COLUMNS]) for r in runs.iter_rows(named=True)]
    return html.Table([html.Thead(head), html.Tbody(body)], id=ids.PERTURB_RUNS, className="simple")


def _flips(i: int, original: str, variant: str, flips: pl.DataFrame) -> html.Div:
    header = ["sentence", "source", "variant source", "expected", "variant output", "reference score drop"]
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(str(f["sent_id"]), href=pair_href(original, variant, f["sent_id"]))),
                *(html.Td(f[k] or "") for k in ("source", "variant_source", "variant_reference")),
                html.Td(f["variant_hypothesis"]),
                html.Td("-" if f["ref_score_drop"] is None else f"{f['ref_score_drop']:.3f}"),
            ]
        )
        for f in flips.iter_rows(named=True)
    ] or [html.Tr(html.Td("none", colSpan=len(header)))]
    table = html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)],
        id=f"{ids.PERTURB_FLIPS}-{i}",
        className="simple",
    )
    title = f"{variant}: worst flips (right in {original}, wrong as a variant; the worst {FLIP_ROWS})"
    return html.Div([html.H4(title), table], className="panel")
