"""The sentence explorer: every sentence of a run, filtered, sorted and paged on the server."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from urllib.parse import urlencode

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import ids, queries
from dashboard.components import labelled, run_picker
from dashboard.state import sandbox, warehouse
from schemas import BeamscopeError
from schemas.stages import SENTENCE_STAGES, TAGS
from warehouse import Warehouse
from warehouse.compare import OUTCOME_LABELS, OUTCOMES, PairError, check_pair

dash.register_page(__name__, path="/sentences", name="Sentences", order=1)

COLUMNS = [
    {"field": "sent_id", "width": 90},
    {"field": "stage", "width": 110},
    {"field": "chrf", "width": 90, "valueFormatter": {"function": "d3.format('.1f')(params.value)"}},
    {"field": "hyp_score", "width": 110, "valueFormatter": {"function": "d3.format('.3f')(params.value)"}},
    {"field": "is_search_error", "headerName": "search err", "width": 100},
    {"field": "first_divergence_step", "headerName": "t*", "width": 70},
    {"field": "src_len", "width": 80},
    {"field": "source", "flex": 2},
    {"field": "reference", "flex": 1},
    {"field": "hypothesis", "flex": 1},
    {"field": "error_tags", "sortable": False, "flex": 1},
]


def _float(v: str | None) -> float | None:
    try:
        x = None if v in (None, "") else float(v)
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def parse_filters(args: dict[str, str]) -> queries.Filters:
    """Filters from URL query parameters (unknown or malformed values are ignored)."""
    search = {"true": True, "false": False}.get(str(args.get("search_error", "")).lower())
    as_int = lambda v: None if _float(v) is None else int(_float(v))  # noqa: E731
    return queries.Filters(
        stage=args.get("stage") or None,
        tag=args.get("tag") or None,
        min_chrf=_float(args.get("min_chrf")),
        max_chrf=_float(args.get("max_chrf")),
        min_len=as_int(args.get("min_len")),
        max_len=as_int(args.get("max_len")),
        search_error=search,
        text=args.get("text") or None,
        ref_token=args.get("ref_token"),
        hyp_token=args.get("hyp_token"),
        cluster=as_int(args.get("cluster")),
        where=args.get("where") or None,
        vs=_text(args.get("vs")),
        outcome=_text(args.get("outcome")) if _text(args.get("outcome")) in OUTCOMES else None,
    )


def _controls(f: queries.Filters) -> html.Div:
    """The explorer's filter controls, set to ``f``."""
    chrf = [f.min_chrf if f.min_chrf is not None else 0, f.max_chrf if f.max_chrf is not None else 100]
    search = None if f.search_error is None else str(f.search_error).lower()
    return html.Div(
        [
            labelled("stage", dcc.Dropdown(list(SENTENCE_STAGES), f.stage, id=ids.FILTER_STAGE)),
            labelled("tag", dcc.Dropdown(list(TAGS), f.tag, id=ids.FILTER_TAG)),
            labelled(
                "chrF",
                dcc.RangeSlider(
                    0, 100, 5, value=chrf, id=ids.FILTER_CHRF, marks=None, tooltip={"placement": "bottom"}
                ),
                minWidth="220px",
            ),
            labelled(
                "source length",
                dcc.Input(id=ids.FILTER_LEN, value=_len_text(f), debounce=True, placeholder="e.g. 10-30"),
            ),
            labelled("search error", dcc.Dropdown(["true", "false"], search, id=ids.FILTER_SEARCH)),
            labelled("text contains", dcc.Input(id=ids.FILTER_TEXT, value=f.text or "", debounce=True)),
            labelled(
                "SQL condition",
                dcc.Input(
                    id=ids.FILTER_WHERE,
                    value=f.where or "",
                    placeholder="e.g. hyp_len > ref_len",
                    style={"width": "260px"},
                ),
            ),
            html.Button("apply", id=ids.FILTER_APPLY, n_clicks=0),
        ],
        className="filters",
    )


def _grid() -> dag.AgGrid:
    """The sentence list (rows fetched in blocks as it scrolls: ``explore``)."""
    return dag.AgGrid(
        id=ids.GRID,
        rowModelType="infinite",
        columnDefs=COLUMNS,
        defaultColDef={"sortable": True, "resizable": True},
        dashGridOptions={
            "cacheBlockSize": 100,
            "maxBlocksInCache": 20,
            "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": True},
        },
        style={"height": "620px"},
    )


def layout(run: str | None = None, **args: str) -> html.Div:
    wh = warehouse()
    if not wh.run_ids():
        return html.Div("This warehouse has no complete runs yet.", className="page")
    run = run if run in wh.run_ids() else wh.default_run()
    f, outcome = _outcome(wh, run, parse_filters(args))
    confusion = (
        html.Div(f"confusion: reference {f.ref_token!r} produced as {f.hyp_token!r}")
        if f.ref_token is not None
        else None
    )
    return html.Div(
        [
            dcc.Location(id=ids.EXPLORER_GO, refresh="callback-nav"),
            dcc.Store(id=ids.FILTERS, data={"run": run, **asdict(f)}),
            run_picker(wh.run_ids(), run, ids.EXPLORER_RUN),
            _controls(f),
            confusion,
            outcome,
            _cluster_line(wh, run, args.get("cluster"), f.cluster),
            html.Div(id=ids.GRID_COUNT),
            html.Div(id=ids.GRID_ERROR, className="error"),
            _grid(),
        ],
        className="page",
    )


def _text(v: object) -> str | None:
    """A query parameter given once (a repeated one is a list: ignored)."""
    return v if isinstance(v, str) and v else None


def _outcome(wh: Warehouse, run: str, f: queries.Filters) -> tuple[queries.Filters, html.Div | None]:
    """A comparison filter's line; the filter dropped, and why, when its runs cannot be paired."""
    if f.vs is None and f.outcome is None:
        return f, None
    try:
        if f.vs is None or f.outcome is None:
            raise PairError(f"it needs vs=RUN and outcome={'|'.join(OUTCOMES)}")
        check_pair(wh, run, f.vs)
    except PairError as e:
        return replace(f, vs=None, outcome=None), html.Div(
            f"comparison filter ignored: {e.message}", className="error"
        )
    label = OUTCOME_LABELS[f.outcome].format(a=run, b=f.vs)
    back = dcc.Link("back to the comparison", href="/compare?" + urlencode({"a": run, "b": f.vs}))
    return f, html.Div([f"compared with {f.vs}: {f.outcome} ({label}) ", back], id=ids.EXPLORER_OUTCOME)


def _cluster_line(wh: queries.Warehouse, run: str, given: str | None, cluster: int | None) -> html.Div | None:
    """What the cluster filter shows: the cluster, or why the URL's value is no cluster of the run."""
    if given is None:
        return None
    if cluster is None or str(cluster) != str(given).strip():
        message = f"cluster {given[:40]!r} is not a cluster number (1, 2, ...)"
        return html.Div(message, className="error", id=ids.FILTER_CLUSTER)
    problem = queries.cluster_problem(wh, run, cluster)
    if problem:
        return html.Div(problem, className="error", id=ids.FILTER_CLUSTER)
    return html.Div(
        f"state cluster {cluster}: the sentences whose clustered decoder state lies in it",
        id=ids.FILTER_CLUSTER,
    )


def _len_text(f: queries.Filters) -> str:
    if f.min_len is None and f.max_len is None:
        return ""
    return f"{f.min_len if f.min_len is not None else ''}-{f.max_len if f.max_len is not None else ''}"


@callback(
    Output(ids.GRID, "getRowsResponse"),
    Output(ids.GRID_COUNT, "children"),
    Output(ids.GRID_ERROR, "children"),
    Input(ids.GRID, "getRowsRequest"),
    State(ids.FILTERS, "data"),
)
def rows(request: dict | None, state: dict) -> tuple:
    """Serve one block of rows for the grid (sorting and filtering happen in DuckDB)."""
    if not request:
        return no_update, no_update, no_update
    run = state.pop("run")
    state.pop("sort", None)
    sort = [(s["colId"], s["sort"]) for s in request.get("sortModel") or []]
    f = queries.Filters(**{**state, "sort": sort})
    try:
        df, total = queries.explore(warehouse(), run, f, request["startRow"], request["endRow"], sandbox())
    except BeamscopeError as e:
        return {"rowData": [], "rowCount": 0}, "", str(e)
    return {"rowData": df.to_dicts(), "rowCount": total}, f"{total:,} sentences match", ""


@callback(
    Output(ids.EXPLORER_GO, "href"),
    Input(ids.FILTER_APPLY, "n_clicks"),
    Input(ids.EXPLORER_RUN, "value"),
    Input(ids.GRID, "selectedRows"),
    State(ids.FILTER_STAGE, "value"),
    State(ids.FILTER_TAG, "value"),
    State(ids.FILTER_CHRF, "value"),
    State(ids.FILTER_LEN, "value"),
    State(ids.FILTER_SEARCH, "value"),
    State(ids.FILTER_TEXT, "value"),
    State(ids.FILTER_WHERE, "value"),
    State(ids.FILTERS, "data"),
    prevent_initial_call=True,
)
def navigate(_apply, picked, selected, stage, tag, chrf, length, search, text, where, state):  # noqa: ANN001, PLR0913
    """The filters into the URL (the page reloads from it), or a clicked row to its sentence."""
    if dash.ctx.triggered_id == ids.GRID:
        if not selected:
            return no_update
        if state.get("vs"):  # a comparison's sentences: both runs side by side
            return "/compare/sentence?" + urlencode(
                {"a": state["run"], "b": state["vs"], "sent": selected[0]["sent_id"]}
            )
        return f"/run/{state['run']}/sentence/{int(selected[0]['sent_id'])}"
    lo, _, hi = (length or "").partition("-")
    params = {
        "run": picked or state["run"],
        "stage": stage,
        "tag": tag,
        "min_chrf": chrf[0] if chrf and chrf[0] > 0 else None,
        "max_chrf": chrf[1] if chrf and chrf[1] < 100 else None,
        "min_len": lo.strip() or None,
        "max_len": hi.strip() or None,
        "search_error": search,
        "text": text or None,
        "where": where or None,
        "ref_token": state.get("ref_token") if dash.ctx.triggered_id != ids.EXPLORER_RUN else None,
        "hyp_token": state.get("hyp_token") if dash.ctx.triggered_id != ids.EXPLORER_RUN else None,
        "vs": state.get("vs") if dash.ctx.triggered_id != ids.EXPLORER_RUN else None,
        "outcome": state.get("outcome") if dash.ctx.triggered_id != ids.EXPLORER_RUN else None,
        "cluster": state.get("cluster") if dash.ctx.triggered_id != ids.EXPLORER_RUN else None,
    }
    return "/sentences?" + urlencode({k: v for k, v in params.items() if v is not None})
