"""Overview of one run: corpus scores and where the errors are; every bar and row clicks through."""

from __future__ import annotations

from urllib.parse import urlencode

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import clusters, figures, ids, maps, queries
from dashboard.components import card, run_picker, simple_table
from dashboard.state import warehouse
from schemas.buckets import SOURCE_LENGTH
from warehouse import Warehouse
from warehouse.blame import reliability
from warehouse.compare import same_corpus_runs
from warehouse.report import reliability_note

dash.register_page(__name__, path="/", name="Overview", order=0)


def layout(run: str | None = None, projection: str | None = None, **_: str) -> html.Div:
    wh = warehouse()
    if not wh.run_ids():
        return html.Div("This warehouse has no complete runs yet.", className="page")
    run = wh.resolve_run(run) if run in wh.run_ids() else wh.default_run()
    return html.Div(
        [
            dcc.Location(id=ids.OVERVIEW_GO, refresh="callback-nav"),
            dcc.Store(id=ids.OVERVIEW_RUN + "-value", data=run),
            run_picker(
                wh.run_ids(), run, ids.OVERVIEW_RUN, (same_corpus_runs(wh, run), ids.OVERVIEW_COMPARE)
            ),
            _cards(queries.run_info(wh, run)),
            _charts(wh, run),
            _tables(wh, run),
            clusters.panel(wh, run),
            maps.corpus_map_panel(run, projection),
        ],
        className="page",
    )


def _cards(info: dict) -> html.Div:
    """The run's corpus scores, model and corpus."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    num = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    cards = [
        card("sentences", f"{info['n_sentences']:,}"),
        card("skipped", f"{info['n_skipped']:,}"),
        card("exact match", pct(info["exact_match"])),
        card("BLEU", num(info["bleu"])),
        card("chrF", num(info["chrf"])),
        card("TER", num(info["ter"])),
        card("model", info["model_name"]),
        card("corpus", info["corpus"]),
    ]
    return html.Div(cards, className="cards")


def _charts(wh: Warehouse, run: str) -> html.Div:
    """Stages, tags, chrF and length histograms, bucket accuracy: every bar clicks through."""
    b = queries.buckets(wh, run)
    hist = lambda column, title: figures.histogram(queries.histogram(wh, run, column, 5), 5, title)  # noqa: E731
    return html.Div(
        [
            _graph(ids.STAGE_BAR, figures.stage_bar(queries.stage_counts(wh, run))),
            _trust(wh, run),
            _graph(ids.TAG_BAR, figures.tag_bar(queries.tag_counts(wh, run))),
            _graph(ids.CHRF_HIST, hist("chrf", "Sentence chrF (click a bin)")),
            _graph(ids.LEN_HIST, hist("src_len", "Source length in tokens (click a bin)")),
            _graph(
                ids.FREQ_BUCKETS,
                figures.bucket_chart(b, "ref_token_frequency", "Token F by training frequency"),
            ),
            _graph(
                ids.LEN_BUCKETS,
                figures.bucket_chart(b, "source_length", "Token F by source length (click a bucket)"),
            ),
        ],
        className="grid2",
    )


def _trust(wh: Warehouse, run: str) -> html.Div:
    """Beside the stages: how often each stage's blame is right, measured on planted faults."""
    trust = reliability(wh, run)
    title = html.H4("How far to trust the blamed stage")
    if trust is None:
        return html.Div([title, html.P(reliability_note(trust))], className="panel")
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    head = html.Tr([html.Th(c) for c in ("stage", "blame precision", "recall", "faults planted")])
    rows = [
        html.Tr(
            [
                html.Td(r["stage"]),
                html.Td(pct(r["precision"])),
                html.Td(pct(r["recall"])),
                html.Td(r["planted"]),
            ]
        )
        for r in trust.scores.iter_rows(named=True)
    ]
    table = html.Table([html.Thead(head), html.Tbody(rows)], className="simple", id=ids.BLAME_TRUST)
    return html.Div([title, table, html.P(reliability_note(trust), className="note")], className="panel")


def _tables(wh: Warehouse, run: str) -> html.Div:
    """Top confusions and worst sentences: a row opens the sentences behind it."""
    conf = queries.confusions(wh, run).drop("example_sent_ids")
    worst = queries.worst(wh, run).select("sent_id", "stage", "chrf", "source", "hypothesis")
    return html.Div(
        [
            html.Div(
                [html.H4("Top confusions at the first divergence"), simple_table(conf, ids.CONFUSIONS)],
                className="panel",
            ),
            html.Div([html.H4("Worst sentences"), simple_table(worst, ids.WORST)], className="panel"),
        ],
        className="grid2",
    )


def _graph(graph_id: str, figure: object) -> html.Div:
    return html.Div(dcc.Graph(id=graph_id, figure=figure), className="panel")


def _explorer(run: str, **filters: object) -> str:
    return "/sentences?" + urlencode({"run": run, **{k: v for k, v in filters.items() if v is not None}})


@callback(
    Output(ids.OVERVIEW_GO, "href"),
    Input(ids.OVERVIEW_RUN, "value"),
    Input(ids.STAGE_BAR, "clickData"),
    Input(ids.TAG_BAR, "clickData"),
    Input(ids.CHRF_HIST, "clickData"),
    Input(ids.LEN_HIST, "clickData"),
    Input(ids.LEN_BUCKETS, "clickData"),
    Input({"table": ids.CONFUSIONS, "row": dash.ALL}, "n_clicks"),
    Input({"table": ids.WORST, "row": dash.ALL}, "n_clicks"),
    Input(ids.CORPUS_MAP, "clickData"),
    State(ids.OVERVIEW_RUN + "-value", "data"),
    State(ids.CORPUS_PROJECTION, "value"),
    prevent_initial_call=True,
)
def navigate(picked, stage, tag, chrf, length, bucket, _conf, _worst, state, run, projection):  # noqa: ANN001, PLR0913
    """Turn a click on any number into the URL of the sentences behind it."""
    trigger = dash.ctx.triggered_id
    if trigger == ids.OVERVIEW_RUN:  # another run, in the same projection
        keep = {"projection": projection} if projection and projection != "pca" else {}
        return "/?" + urlencode({"run": picked, **keep}) if picked != run else no_update
    if not dash.ctx.triggered or dash.ctx.triggered[0]["value"] in (None, 0):
        return no_update
    if trigger == ids.STAGE_BAR:
        return _explorer(run, stage=stage["points"][0]["customdata"])
    if trigger == ids.TAG_BAR:
        return _explorer(run, tag=tag["points"][0]["customdata"])
    if trigger == ids.CHRF_HIST:
        lo, hi = chrf["points"][0]["customdata"]
        return _explorer(run, min_chrf=lo, max_chrf=hi)
    if trigger == ids.LEN_HIST:
        lo, hi = length["points"][0]["customdata"]
        return _explorer(run, min_len=int(lo), max_len=int(hi) - 1)
    if trigger == ids.LEN_BUCKETS:
        lo, hi = SOURCE_LENGTH.ranges()[bucket["points"][0]["customdata"]]
        return _explorer(run, min_len=lo, max_len=hi)
    if isinstance(trigger, dict) and trigger["table"] == ids.CONFUSIONS:
        row = queries.confusions(warehouse(), run).row(trigger["row"], named=True)
        return _explorer(run, ref_token=row["ref_token"], hyp_token=row["hyp_token"])
    if trigger == ids.CORPUS_MAP:
        return f"/run/{run}/sentence/{int(state['points'][0]['customdata'])}"
    if isinstance(trigger, dict) and trigger["table"] == ids.WORST:
        row = queries.worst(warehouse(), run).row(trigger["row"], named=True)
        return f"/run/{run}/sentence/{row['sent_id']}"
    return no_update


@callback(
    Output(ids.OVERVIEW_GO, "href", allow_duplicate=True),
    Input(ids.OVERVIEW_COMPARE, "value"),
    State(ids.OVERVIEW_RUN + "-value", "data"),
    prevent_initial_call=True,
)
def compare_with(other: str | None, run: str):
    """The "compare with…" picker: this run as A, the picked one as B."""
    return "/compare?" + urlencode({"a": run, "b": other}) if other else no_update
