"""The SQL console: read-only, time- and row-limited queries over the warehouse views."""

from __future__ import annotations

import dash
import dash_ag_grid as dag
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import ids
from dashboard.state import sandbox
from schemas import BeamscopeError

dash.register_page(__name__, path="/sql", name="SQL", order=2)

EXAMPLE = (
    "SELECT stage, count(*) AS n\nFROM sentence_errors\nWHERE run_id = (SELECT max(run_id) FROM runs)\n"
    "GROUP BY stage ORDER BY n DESC"
)


def layout(**_: str) -> html.Div:
    return html.Div(
        [
            html.P(
                "Views: runs, sentences, source_tokens, target_steps, reference_steps, attention, "
                "beam_nodes, "
                "skipped, and the marts sentence_errors, error_summary, token_confusions, bucket_accuracy, "
                "attention_coverage. Read-only; no file or network access; queries are time- and "
                "row-limited."
            ),
            dcc.Textarea(
                id=ids.SQL_TEXT,
                value=EXAMPLE,
                style={"width": "100%", "height": "140px", "fontFamily": "monospace"},
            ),
            html.Div(
                [
                    html.Button("run", id=ids.SQL_RUN, n_clicks=0),
                    html.Button("download CSV", id=ids.SQL_DOWNLOAD_BUTTON, n_clicks=0),
                ],
                className="filters",
            ),
            html.Div(id=ids.SQL_MESSAGE),
            dcc.Download(id=ids.SQL_DOWNLOAD),
            dag.AgGrid(
                id=ids.SQL_GRID,
                rowData=[],
                columnDefs=[],
                defaultColDef={"sortable": True, "resizable": True},
                style={"height": "420px"},
            ),
            dcc.Graph(id=ids.SQL_CHART, figure=go.Figure()),
        ],
        className="page",
    )


def quick_chart(df: pl.DataFrame) -> go.Figure:
    """A bar chart of the first column against the first numeric column after it, if any."""
    numeric = [c for c in df.columns[1:] if df[c].dtype.is_numeric()]
    if df.width < 2 or not numeric or df.height == 0:
        return go.Figure()
    x = [str(v) for v in df[df.columns[0]].head(200).to_list()]
    fig = go.Figure(go.Bar(x=x, y=df[numeric[0]].head(200).to_list()))
    fig.update_layout(title=f"{numeric[0]} by {df.columns[0]}", height=320)
    return fig


def _run(query: str) -> tuple[pl.DataFrame | None, str]:
    try:
        result = sandbox().run(query)
    except BeamscopeError as e:
        return None, str(e)
    note = f"{result.df.height} rows in {1000 * result.elapsed_s:.0f} ms"
    if result.truncated:
        note += f" (cut at {result.df.height} rows)"
    return result.df, note


@callback(
    Output(ids.SQL_GRID, "rowData"),
    Output(ids.SQL_GRID, "columnDefs"),
    Output(ids.SQL_CHART, "figure"),
    Output(ids.SQL_MESSAGE, "children"),
    Output(ids.SQL_MESSAGE, "className"),
    Input(ids.SQL_RUN, "n_clicks"),
    State(ids.SQL_TEXT, "value"),
)
def run_query(_: int, query: str):
    df, note = _run(query or "")
    if df is None:
        return [], [], go.Figure(), note, "error"
    rows = df.with_columns(
        pl.col(c).cast(pl.String) for c in df.columns if df[c].dtype.is_nested()
    ).to_dicts()
    return rows, [{"field": c} for c in df.columns], quick_chart(df), note, ""


@callback(
    Output(ids.SQL_DOWNLOAD, "data"),
    Input(ids.SQL_DOWNLOAD_BUTTON, "n_clicks"),
    State(ids.SQL_TEXT, "value"),
    prevent_initial_call=True,
)
def download(_: int, query: str):
    df, _note = _run(query or "")
    if df is None:
        return no_update
    nested = [c for c in df.columns if df[c].dtype.is_nested()]
    return dcc.send_string(
        df.with_columns(pl.col(c).cast(pl.String) for c in nested).write_csv(), "query.csv"
    )
