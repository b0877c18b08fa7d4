"""The overview's state-cluster panel: where in decoder-state space the model fails.

The run's clusters (table ``state_clusters``) ranked by error rate; a click on a row opens the
explorer on that cluster's sentences (``/sentences?run=R&cluster=K``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import dash
import polars as pl
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import ids, queries
from dashboard.components import simple_table
from dashboard.state import warehouse
from warehouse import Warehouse

TITLE = "Where in state space the model fails: decoder-state clusters by error rate (click a row)"


def panel(wh: Warehouse, run: str) -> html.Div:
    """The ranked clusters of ``run`` as a clickable table (or why there are none)."""
    c = queries.state_clusters(wh, run)
    head = [
        dcc.Location(id=ids.CLUSTERS_GO, refresh="callback-nav"),
        dcc.Store(id=ids.STATE_CLUSTERS_RUN, data=run),
        html.H4(TITLE),
    ]
    if c.height == 0:
        text = "No state clusters: the run kept no decoder states, or has too few sentences with a reference."
        return html.Div([*head, html.Div(text, className="muted")], className="panel")
    rate = c["n_wrong"].sum() / c["n_states"].sum()
    shown = c.select(
        "cluster",
        pl.col("n_states").alias("sentences"),
        pl.col("n_wrong").alias("wrong"),
        pl.format("{}%", (pl.col("error_rate") * 100).round(1)).alias("error rate"),
        pl.col("top_produced").list.join("  ").alias("produced (most frequent)"),
        pl.col("top_reference").list.join("  ").alias("reference (most frequent)"),
    )
    note = (
        f"One decoder state per sentence: a wrong one's at its first divergence, a seeded random step "
        f"of the others; {c.height} k-means clusters; the run's error rate is {100 * rate:.1f}%."
    )
    return html.Div(
        [
            *head,
            html.Div(note, className="muted"),
            simple_table(shown, ids.STATE_CLUSTERS),
        ],
        className="panel",
    )


@callback(
    Output(ids.CLUSTERS_GO, "href"),
    Input({"table": ids.STATE_CLUSTERS, "row": dash.ALL}, "n_clicks"),
    State(ids.STATE_CLUSTERS_RUN, "data"),
    prevent_initial_call=True,
)
def open_cluster(_clicks: list, run: str):
    """A clicked cluster: the explorer on its sentences."""
    trigger = dash.ctx.triggered_id
    if not isinstance(trigger, dict) or not dash.ctx.triggered or dash.ctx.triggered[0]["value"] in (None, 0):
        return no_update
    cluster = queries.state_clusters(warehouse(), run)["cluster"][trigger["row"]]
    return "/sentences?" + urlencode({"run": run, "cluster": int(cluster)})
