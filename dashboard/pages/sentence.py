"""One sentence, five stages: encoder, decoder, attention, prediction (top-k), search (beam)."""

from __future__ import annotations

import re

import dash
from dash import Input, Output, Patch, State, callback, dcc, html, no_update

from dashboard import attribution, figures, ids, neighbours, queries, stages, whatif
from dashboard.stages import not_found
from dashboard.state import warehouse

dash.register_page(__name__, path_template="/run/<run_id>/sentence/<sent_id>", name="Sentence", nav=False)

_STEP = re.compile(r"^(\d+):")


def layout(
    run_id: str | None = None, sent_id: str | None = None, projection: str | None = None, **_: str
) -> html.Div:
    wh = warehouse()
    if run_id not in wh.run_ids():
        return not_found("No complete run of that name in this warehouse.")
    if sent_id is None or not re.fullmatch(r"[0-9]{1,12}", sent_id):
        return not_found("A sentence id is a non-negative whole number.")
    view = queries.sentence_view(wh, run_id, int(sent_id))
    if view is None:
        return not_found(f"Run {run_id} has no sentence {sent_id}.")
    t_star = view.sentence["first_divergence_step"]
    controls = html.Div(
        [
            dcc.RadioItems(
                [{"label": "hypothesis", "value": "hyp"}, {"label": "reference (forced)", "value": "ref"}],
                "hyp",
                id=ids.ATTN_DECODING,
                inline=True,
            ),
            dcc.Dropdown(
                stages.head_options(view),
                "-1,-1",
                id=ids.ATTN_HEAD,
                clearable=False,
                style={"width": "260px"},
            ),
        ],
        className="filters",
    )
    return html.Div(
        [
            dcc.Store(id=ids.SENTENCE_KEY, data={"run": run_id, "sent_id": int(sent_id), "t_star": t_star}),
            html.H3(f"Sentence {sent_id} of {run_id}"),
            stages.summary(view),
            *stages.stages(view, stages.GraphIds(ids.ATTN, ids.TOPK, ids.BEAM), controls),
            attribution.section(view, run_id, int(sent_id)),
            neighbours.section(view, {"run": run_id, "sent_id": int(sent_id)}, projection),
            whatif.section(view),
        ],
        className="page",
    )


@callback(
    Output(ids.ATTN, "figure"),
    Input(ids.ATTN_DECODING, "value"),
    Input(ids.ATTN_HEAD, "value"),
    State(ids.SENTENCE_KEY, "data"),
    prevent_initial_call=True,
)
def switch_attention(decoding: str, head: str, key: dict):
    view = queries.sentence_view(warehouse(), key["run"], key["sent_id"])
    layer, h = (int(x) for x in head.split(","))
    return stages.attention_figure(view, decoding, layer, h)


@callback(
    Output(ids.ATTN, "figure", allow_duplicate=True),
    Output(ids.TOPK, "figure"),
    Input(ids.ATTN, "hoverData"),
    Input(ids.TOPK, "hoverData"),
    prevent_initial_call=True,
)
def highlight_step(attn_hover: dict | None, topk_hover: dict | None):
    """Hovering a target step outlines its attention row and its top-k column."""
    hover = attn_hover if dash.ctx.triggered_id == ids.ATTN else topk_hover
    if not hover:
        return no_update, no_update
    point = hover["points"][0]
    label = point["y"] if dash.ctx.triggered_id == ids.ATTN else point["x"]
    m = _STEP.match(str(label))
    if not m:
        return no_update, no_update
    step = int(m.group(1))
    attn, topk = Patch(), Patch()
    attn["layout"]["shapes"][0] = figures.step_highlight(step, vertical=False)
    topk["layout"]["shapes"][0] = figures.step_highlight(step, vertical=True)
    return attn, topk
