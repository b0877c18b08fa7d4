"""One sentence, five stages: encoder, decoder, attention, prediction (top-k), search (beam)."""

from __future__ import annotations

import re

import dash
from dash import Input, Output, Patch, State, callback, dcc, html, no_update

from dashboard import figures, ids, neighbours, queries, whatif
from dashboard.state import warehouse

dash.register_page(__name__, path_template="/run/<run_id>/sentence/<sent_id>", name="Sentence", nav=False)

_STEP = re.compile(r"^(\d+):")


def _tokens(tokens: list[str], mark: int | None = None, unknown: list[bool] | None = None) -> html.Div:
    chips = []
    for i, t in enumerate(tokens):
        cls = "tok" + (" diverge" if i == mark else "") + (" unk" if unknown and unknown[i] else "")
        chips.append(html.Span(t, className=cls, title=f"position {i}"))
    return html.Div(chips, className="tokens")


def _not_found(message: str) -> html.Div:
    return html.Div(
        [html.H3("Not found"), html.P(message), dcc.Link("back to the overview", href="/")], className="page"
    )


def layout(
    run_id: str | None = None, sent_id: str | None = None, projection: str | None = None, **_: str
) -> html.Div:
    wh = warehouse()
    if run_id not in wh.run_ids():
        return _not_found("No complete run of that name in this warehouse.")
    if sent_id is None or not re.fullmatch(r"[0-9]{1,12}", sent_id):
        return _not_found("A sentence id is a non-negative whole number.")
    view = queries.sentence_view(wh, run_id, int(sent_id))
    if view is None:
        return _not_found(f"Run {run_id} has no sentence {sent_id}.")
    s = view.sentence
    t_star = s["first_divergence_step"]
    src = view.source_tokens["token"].to_list()
    hyp = view.target_steps["token"].to_list()
    ref = view.reference_steps["token"].to_list() if view.reference_steps.height else None
    heads = [{"label": "mean of layers and heads", "value": "-1,-1"}] + [
        {"label": f"layer {layer} head {head}", "value": f"{layer},{head}"}
        for layer, head in queries.layer_heads(view.attention)
    ]
    attn = figures.attention_heatmap(
        queries.attention_matrix(view.attention, "hyp"),
        src,
        hyp,
        "Attention of the hypothesis (rows: target steps)",
        t_star,
    )
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    header = html.Div(
        [
            html.H3(f"Sentence {sent_id} of {run_id}"),
            html.Table(
                [
                    html.Tr([html.Th("source"), html.Td(s["source"])]),
                    html.Tr([html.Th("reference"), html.Td(s["reference"] or "")]),
                    html.Tr([html.Th("hypothesis"), html.Td(s["hypothesis"])]),
                    html.Tr([html.Th("stage"), html.Td(f"{s['stage']}  {', '.join(s['error_tags'] or [])}")]),
                    html.Tr(
                        [
                            html.Th("scores"),
                            html.Td(
                                f"hyp {fmt(s['hyp_score'])}  ref {fmt(s['ref_score'])}  "
                                f"chrF {fmt(s['chrf'])}  "
                                f"search error {s['is_search_error']}  first divergence {t_star}"
                            ),
                        ]
                    ),
                ],
                className="simple",
            ),
        ]
    )
    return html.Div(
        [
            dcc.Store(id=ids.SENTENCE_KEY, data={"run": run_id, "sent_id": int(sent_id), "t_star": t_star}),
            header,
            html.H4("Encoder: source tokens"),
            _tokens(src, unknown=view.source_tokens["is_unknown"].to_list()),
            html.H4("Decoder: hypothesis and reference by step (first divergence marked)"),
            html.Div([html.Span("hyp "), _tokens(hyp, t_star)]),
            html.Div([html.Span("ref "), _tokens(ref, t_star)]) if ref else None,
            html.H4("Attention"),
            html.Div(
                [
                    dcc.RadioItems(
                        [
                            {"label": "hypothesis", "value": "hyp"},
                            {"label": "reference (forced)", "value": "ref"},
                        ],
                        "hyp",
                        id=ids.ATTN_DECODING,
                        inline=True,
                    ),
                    dcc.Dropdown(heads, "-1,-1", id=ids.ATTN_HEAD, clearable=False, style={"width": "260px"}),
                ],
                className="filters",
            ),
            html.Div(dcc.Graph(id=ids.ATTN, figure=attn), className="panel"),
            html.H4("Prediction: top-k per step (chosen outlined, reference dotted red)"),
            html.Div(
                dcc.Graph(id=ids.TOPK, figure=figures.topk_figure(view.target_steps, ref, "Top-k")),
                className="panel",
            ),
            html.H4("Search: every hypothesis of the beam (best path in red)"),
            html.Div(
                dcc.Graph(id=ids.BEAM, figure=figures.beam_tree(view.beam_nodes, "Beam tree")),
                className="panel",
            ),
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
    wh = warehouse()
    view = queries.sentence_view(wh, key["run"], key["sent_id"])
    layer, h = (int(x) for x in head.split(","))
    steps = view.target_steps if decoding == "hyp" else view.reference_steps
    title = f"Attention of the {'hypothesis' if decoding == 'hyp' else 'reference (forced decoding)'}"
    title += "" if layer < 0 else f", layer {layer} head {h}"
    return figures.attention_heatmap(
        queries.attention_matrix(view.attention, decoding, layer, h),
        view.source_tokens["token"].to_list(),
        steps["token"].to_list(),
        title,
        key["t_star"],
    )


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
