"""The five stages of one sentence as layout pieces (no callbacks), shared by the sentence page and
the two-run sentence view: tokens, the sentence's scores, attention, top-k and beam tree."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
from dash import dcc, html

from dashboard import figures, queries


class GraphIds(NamedTuple):
    """Component ids of a stage view's three figures."""

    attention: str
    topk: str
    beam: str


def not_found(message: str) -> html.Div:
    return html.Div(
        [html.H3("Not found"), html.P(message), dcc.Link("back to the overview", href="/")], className="page"
    )


def tokens(
    toks: list[str], mark: int | None = None, unknown: list[bool] | None = None, differ: int | None = None
) -> html.Div:
    """Token chips; ``mark``: the first divergence from the reference, ``differ``: where another
    hypothesis first differs from this one."""
    chips = []
    for i, t in enumerate(toks):
        cls = "tok" + (" diverge" if i == mark else "") + (" differ" if i == differ else "")
        cls += " unk" if unknown and unknown[i] else ""
        chips.append(html.Span(t, className=cls, title=f"position {i}"))
    return html.Div(chips, className="tokens")


def first_difference(a: list[str], b: list[str]) -> int | None:
    """The first position where two token lists differ (the shorter one's end counts), or None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def summary(
    view: queries.SentenceView, rows: tuple[str, ...] = ("source", "reference", "hypothesis")
) -> html.Table:
    """The sentence's texts (``rows``), stage, tags and scores as a table."""
    s = view.sentence
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    scores = (
        f"hyp {fmt(s['hyp_score'])}  ref {fmt(s['ref_score'])}  chrF {fmt(s['chrf'])}  "
        f"search error {s['is_search_error']}  first divergence {s['first_divergence_step']}"
    )
    texts = [html.Tr([html.Th(r), html.Td(s[r] or "")]) for r in rows]
    return html.Table(
        [
            *texts,
            html.Tr([html.Th("stage"), html.Td(f"{s['stage']}  {', '.join(s['error_tags'] or [])}")]),
            html.Tr([html.Th("scores"), html.Td(scores)]),
        ],
        className="simple",
    )


def head_options(view: queries.SentenceView) -> list[dict[str, str]]:
    return [{"label": "mean of layers and heads", "value": "-1,-1"}] + [
        {"label": f"layer {layer} head {head}", "value": f"{layer},{head}"}
        for layer, head in queries.layer_heads(view.attention)
    ]


def attention_figure(
    view: queries.SentenceView, decoding: str = "hyp", layer: int = -1, head: int = -1
) -> go.Figure:
    """The attention heatmap of the hypothesis or the forced reference, one head or the mean."""
    steps = view.target_steps if decoding == "hyp" else view.reference_steps
    title = f"Attention of the {'hypothesis' if decoding == 'hyp' else 'reference (forced decoding)'}"
    title += " (rows: target steps)" if layer < 0 else f", layer {layer} head {head}"
    return figures.attention_heatmap(
        queries.attention_matrix(view.attention, decoding, layer, head),
        view.source_tokens["token"].to_list(),
        steps["token"].to_list(),
        title,
        view.sentence["first_divergence_step"],
    )


def stages(
    view: queries.SentenceView,
    graph_ids: GraphIds,
    attention_controls: html.Div | None = None,
    differ: int | None = None,
) -> list:
    """Encoder tokens, decoder tokens (first divergence marked; ``differ``: where the other run's
    hypothesis first differs), attention, top-k and beam tree, each under its heading."""
    t_star = view.sentence["first_divergence_step"]
    hyp = view.target_steps["token"].to_list()
    ref = view.reference_steps["token"].to_list() if view.reference_steps.height else None
    decoder = "Decoder: hypothesis and reference by step (first divergence marked"
    decoder += "; first difference from the other run outlined)" if differ is not None else ")"
    return [
        html.H4("Encoder: source tokens"),
        tokens(view.source_tokens["token"].to_list(), unknown=view.source_tokens["is_unknown"].to_list()),
        html.H4(decoder),
        html.Div([html.Span("hyp "), tokens(hyp, t_star, differ=differ)]),
        html.Div([html.Span("ref "), tokens(ref, t_star)]) if ref else None,
        html.H4("Attention"),
        attention_controls,
        html.Div(dcc.Graph(id=graph_ids.attention, figure=attention_figure(view)), className="panel"),
        html.H4("Prediction: top-k per step (chosen outlined, reference dotted red)"),
        html.Div(
            dcc.Graph(id=graph_ids.topk, figure=figures.topk_figure(view.target_steps, ref, "Top-k")),
            className="panel",
        ),
        html.H4("Search: every hypothesis of the beam (best path in red)"),
        html.Div(
            dcc.Graph(id=graph_ids.beam, figure=figures.beam_tree(view.beam_nodes, "Beam tree")),
            className="panel",
        ),
    ]
