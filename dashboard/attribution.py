"""The sentence page's "why" views: attribution beside attention, and close words of any token."""

from __future__ import annotations

from dash import Input, Output, State, callback, dcc, html

from dashboard import figures, ids, queries
from dashboard.state import warehouse
from warehouse.attribution import attribution_matrix, sentence_attribution
from warehouse.words import close_words

SIGNED = {"ig": True, "grad_x_input": True, "saliency": False}


def section(view: queries.SentenceView, run: str, sent_id: int) -> html.Div:
    """Attention and attribution side by side (same axes), attribution to earlier target tokens,
    and the close-words picker."""
    rows = sentence_attribution(warehouse(), run, sent_id)
    src = view.source_tokens["token"].to_list()
    hyp = view.target_steps["token"].to_list()
    t_star = view.sentence["first_divergence_step"]
    if rows.height == 0:
        body = html.P(
            "No attribution of this sentence yet: "
            f"beamscope attribute --warehouse WAREHOUSE --run {run} --where 'sent_id = {sent_id}'",
            className="muted",
        )
    else:
        method = rows["method"][0]
        signed = SIGNED[method]
        inputs = ["<s>", *hyp[:-1]]  # decoder input position p holds the token of step p - 1
        z_src = attribution_matrix(rows, "src", len(hyp), len(src))
        z_tgt = attribution_matrix(rows, "tgt", len(hyp), len(inputs))
        body = html.Div(
            [
                _half(
                    figures.attention_heatmap(
                        queries.attention_matrix(view.attention, "hyp"), src, hyp, "Attention (mean)", t_star
                    ),
                    ids.ATTRIBUTION_SRC + "-attn",
                ),
                _half(
                    figures.attribution_heatmap(
                        z_src, src, hyp, f"Attribution to the source ({method})", signed, t_star
                    ),
                    ids.ATTRIBUTION_SRC,
                ),
                _half(
                    figures.attribution_heatmap(
                        z_tgt, inputs, hyp, f"Attribution to earlier output tokens ({method})", signed, t_star
                    ),
                    ids.ATTRIBUTION_TGT,
                ),
            ],
            className="row",
        )
    return html.Div(
        [
            html.H4(
                "Why: where the model looked (attention) and what its prediction drew from (attribution)"
            ),
            body,
            *_close_words(view, run),
        ]
    )


def _half(fig, graph_id: str) -> html.Div:  # noqa: ANN001
    return html.Div(dcc.Graph(id=graph_id, figure=fig), className="panel half")


def token_options(view: queries.SentenceView) -> list[dict[str, str]]:
    """Every token the page shows, as 'side:token_id' values (source, hypothesis, reference)."""
    opts = []
    for label, frame, side in (
        ("source", view.source_tokens, "src"),
        ("hyp", view.target_steps, "tgt"),
        ("ref", view.reference_steps, "tgt"),
    ):
        for i, (tok, tid) in enumerate(frame.select("token", "token_id").iter_rows()):
            opts.append({"label": f"{label} {i}: {tok}", "value": f"{side}:{tid}:{label}{i}"})
    return opts


def _close_words(view: queries.SentenceView, run: str) -> list:
    opts = token_options(view)
    if not opts:
        return []
    t_star = view.sentence["first_divergence_step"]
    default = next(
        (o["value"] for o in opts if t_star is not None and o["value"].endswith(f"hyp{t_star}")),
        opts[0]["value"],
    )
    return [
        html.H4("Close words: a token's nearest tokens in the model's embedding space (cosine)"),
        dcc.Dropdown(opts, default, id=ids.CLOSE_WORDS_TOKEN, clearable=False, style={"width": "320px"}),
        dcc.Store(id=ids.CLOSE_WORDS + "-run", data=run),
        html.Div(words_table(run, default), id=ids.CLOSE_WORDS),
    ]


def words_table(run: str, value: str) -> html.Div:
    """The close words of the token ``value`` ('side:token_id:...') as a small table."""
    side, token_id, _ = value.split(":", 2)
    words = close_words(warehouse(), run, side, int(token_id))
    if words is None:
        return html.P(
            "This run has no close words (traced before schema 5, or a what-if run).", className="muted"
        )
    space = "input embedding" if side == "src" else "output layer"
    rows = [html.Tr([html.Td(r), html.Td(t), html.Td(f"{s:.3f}")]) for r, t, s in words.iter_rows()]
    head = html.Tr([html.Th("rank"), html.Th(f"token ({space})"), html.Th("cosine")])
    return html.Div(html.Table([head, *rows], className="simple"))


@callback(
    Output(ids.CLOSE_WORDS, "children"),
    Input(ids.CLOSE_WORDS_TOKEN, "value"),
    State(ids.CLOSE_WORDS + "-run", "data"),
    prevent_initial_call=True,
)
def show_close_words(value: str, run: str) -> html.Div:
    return words_table(run, value)
