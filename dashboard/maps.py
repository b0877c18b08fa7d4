"""State maps: the projection control (PCA, UMAP, t-SNE; the choice lives in the URL as
``?projection=``) and the overview's corpus map, which uses it.

A projection is computed on request and cached (``warehouse.projections``); a name that is no
projection is said on the page, next to the control, and nothing is computed.
"""

from __future__ import annotations

from urllib.parse import urlencode

import polars as pl
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import figures, ids
from dashboard.state import warehouse
from schemas import BeamscopeError
from warehouse.projections import PROJECTIONS, axis_titles, check_projection
from warehouse.states import MAP_SENTENCES, corpus_map

UMAP_NOTE = "UMAP's first projection after a server start also compiles its code (several seconds)"


def parse_projection(name: str | None) -> tuple[str | None, str | None]:
    """The projection of a URL value and None, or None and the message saying why not."""
    try:
        return check_projection(name), None
    except BeamscopeError as e:
        return None, str(e)


def projection_control(control_id: str, method: str | None, message: str | None) -> html.Div:
    """Radio buttons of the projections (none chosen after a bad URL value, whose message shows)."""
    radio = dcc.RadioItems(
        [{"label": label, "value": name} for name, label in PROJECTIONS.items()],
        method,
        id=control_id,
        inline=True,
        inputStyle={"marginLeft": "10px"},
    )
    note = html.Span(message, className="error") if message else html.Span(UMAP_NOTE, className="muted")
    return html.Div([html.Span("projection "), radio, html.Span(" "), note], className="filters")


def corpus_map_panel(run: str, projection: str | None) -> html.Div:
    """The corpus map of the overview with its projection control."""
    method, message = parse_projection(projection)
    return html.Div(
        [
            dcc.Location(id=ids.CORPUS_MAP_GO, refresh="callback-nav"),
            dcc.Store(id=ids.CORPUS_MAP_KEY, data={"run": run, "projection": method, "error": message}),
            projection_control(ids.CORPUS_PROJECTION, method, message),
            dcc.Loading(dcc.Graph(id=ids.CORPUS_MAP)),
        ],
        className="panel",
    )


@callback(Output(ids.CORPUS_MAP, "figure"), Input(ids.CORPUS_MAP_KEY, "data"))
def show_corpus_map(key: dict):
    method = key.get("projection")
    if method is None:
        return figures.corpus_map(pl.DataFrame(), f"No corpus map: {key.get('error')}")
    n = MAP_SENTENCES[method]
    title = f"Decoder states of up to {n} sentences, wrong ones first ({PROJECTIONS[method]}; click a dot)"
    try:
        points = corpus_map(warehouse(), key["run"], projection=method)
    except BeamscopeError as e:
        return figures.corpus_map(pl.DataFrame(), f"No corpus map: {e}")
    return figures.corpus_map(points, title, axis_titles(method))


@callback(
    Output(ids.CORPUS_MAP_GO, "href"),
    Input(ids.CORPUS_PROJECTION, "value"),
    State(ids.CORPUS_MAP_KEY, "data"),
    prevent_initial_call=True,
)
def switch_corpus_projection(method: str | None, key: dict):
    """A projection chosen: into the URL (the page shows it from there)."""
    if method is None or method == key.get("projection"):
        return no_update
    return "/?" + urlencode({"run": key["run"], "projection": method})
