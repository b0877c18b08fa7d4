"""The sentence view's neighbour section (goal G2): the nearest training states of any encoder or
decoder state, and the sentence's state trajectory among its neighbours.

A click on a cell of the attention map picks that step's decoder state; the dropdown offers
every step and every source token. A click on a neighbour dot of the trajectory opens its
training sentence.
"""

from __future__ import annotations

from urllib.parse import urlencode

import polars as pl
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import figures, ids, maps, queries
from dashboard.state import warehouse
from schemas import BeamscopeError
from warehouse.projections import PROJECTIONS, axis_titles
from warehouse.states import bank_description, nearest_training, trajectory

K = 10


def section(view: queries.SentenceView, key: dict, projection: str | None = None) -> html.Div:
    """The neighbour table and the trajectory; ``projection`` from the URL (given: shown at once)."""
    src = view.source_tokens["token"].to_list()
    hyp = view.target_steps["token"].to_list()
    options = [
        {"label": f"decoder, step {t} (produced {tok!r})", "value": f"decoder:{t}"}
        for t, tok in enumerate(hyp)
    ] + [
        {"label": f"encoder, source token {i} ({tok!r})", "value": f"encoder:{i}"}
        for i, tok in enumerate(src)
    ]
    t_star = view.sentence["first_divergence_step"]
    first = f"decoder:{t_star if t_star is not None and t_star < len(hyp) else 0}"
    return html.Div(
        [
            html.H4(
                "Nearest training examples of a state (click a cell of the attention map to pick its step)"
            ),
            dcc.Dropdown(options, first, id=ids.NN_STATE, clearable=False, style={"width": "420px"}),
            dcc.Loading(html.Div(id=ids.NN_TABLE)),
            html.H4("State trajectory: the sentence's states among their nearest training states"),
            _trajectory_controls(key, projection),
            dcc.Location(id=ids.NN_GO, refresh="callback-nav"),
            html.Div(dcc.Loading(dcc.Graph(id=ids.TRAJECTORY, style={"display": "none"})), className="panel"),
        ]
    )


def _trajectory_controls(key: dict, projection: str | None) -> html.Div:
    method, message = maps.parse_projection(projection)
    data = {**key, "projection": method, "error": message, "auto": projection is not None}
    return html.Div(
        [
            dcc.Store(id=ids.TRAJECTORY_KEY, data=data),
            dcc.Location(id=ids.TRAJECTORY_GO, refresh="callback-nav"),
            maps.projection_control(ids.TRAJECTORY_PROJECTION, method, message),
            html.Button("Project the states", id=ids.TRAJECTORY_SHOW),
        ]
    )


def _chips(tokens: list[str], hit: int | None) -> html.Span:
    return html.Span(
        [html.Span(t, className="tok hit" if i == hit else "tok") for i, t in enumerate(tokens or [])],
        className="tokens",
    )


@callback(
    Output(ids.NN_STATE, "value"),
    Input(ids.ATTN, "clickData"),
    prevent_initial_call=True,
)
def pick_step(click: dict | None):
    label = str(((click or {}).get("points") or [{}])[0].get("y", ""))
    step = label.split(":", 1)[0]
    return f"decoder:{step}" if step.isdigit() else no_update


@callback(
    Output(ids.NN_TABLE, "children"),
    Input(ids.NN_STATE, "value"),
    State(ids.SENTENCE_KEY, "data"),
)
def show_neighbours(state: str, key: dict):
    kind, pos = state.split(":")
    try:
        near = nearest_training(warehouse(), key["run"], key["sent_id"], kind, [int(pos)], K)
    except BeamscopeError as e:
        return html.Div(str(e), className="muted")
    if near.height == 0:
        return html.Div("no stored state there", className="muted")
    head = [
        "#",
        "distance",
        "training source",
        "training reference",
        "next token" if kind == "decoder" else "",
    ]
    rows = []
    for r in near.iter_rows(named=True):
        src = _chips(r["tokens"], r["train_pos"]) if kind == "encoder" else r["source"]
        ref = _chips(r["tokens"], r["train_pos"]) if kind == "decoder" else r["reference"]
        link = dcc.Link(f"{r['rank']}", href=f"/run/{r['train_run']}/sentence/{r['train_sent_id']}")
        rows.append(
            html.Tr(
                [
                    html.Td(link),
                    html.Td(f"{r['distance']:.4f}"),
                    html.Td(src),
                    html.Td(ref),
                    html.Td(r.get("next_token", "")),
                ]
            )
        )
    caption = html.Div(
        f"searched in the {bank_description(warehouse(), key['run'], kind)}", className="muted"
    )
    return html.Div(
        [
            caption,
            html.Table([html.Tr([html.Th(h) for h in head]), *rows], className="simple", id=ids.NN_ROWS),
        ]
    )


@callback(
    Output(ids.TRAJECTORY, "figure"),
    Output(ids.TRAJECTORY, "style"),
    Input(ids.TRAJECTORY_SHOW, "n_clicks"),
    Input(ids.TRAJECTORY_KEY, "data"),
)
def show_trajectory(clicks: int | None, key: dict):
    """On request (or when the URL names a projection): 30-odd neighbour searches and a
    projection, the costliest panel of the page."""
    if not clicks and not key.get("auto"):
        return no_update, no_update
    method = key.get("projection")
    title = f"Encoder (blue) and decoder (orange) states of sentence {key['sent_id']}"
    if method is None:
        return figures.trajectory(pl.DataFrame(), f"{title}: {key.get('error')}"), {}
    title += f" ({PROJECTIONS[method]})"
    try:
        points = trajectory(warehouse(), key["run"], key["sent_id"], k=5, projection=method)
        figure = figures.trajectory(points, title, axis_titles(method))
    except BeamscopeError as e:
        figure = figures.trajectory(pl.DataFrame(), f"{title}: {e}")
    return figure, {}


@callback(
    Output(ids.TRAJECTORY_GO, "href"),
    Input(ids.TRAJECTORY_PROJECTION, "value"),
    State(ids.TRAJECTORY_KEY, "data"),
    prevent_initial_call=True,
)
def switch_projection(method: str | None, key: dict):
    """A projection chosen: into the URL, which shows the trajectory with it."""
    if method is None or (method == key.get("projection") and key.get("auto")):
        return no_update
    return f"/run/{key['run']}/sentence/{key['sent_id']}?" + urlencode({"projection": method})


@callback(
    Output(ids.NN_GO, "href"),
    Input(ids.TRAJECTORY, "clickData"),
    prevent_initial_call=True,
)
def open_neighbour(click: dict | None):
    point = ((click or {}).get("points") or [{}])[0]
    data = point.get("customdata")
    if not data or data[1] is None:
        return no_update
    return f"/run/{data[0]}/sentence/{int(data[1])}"
