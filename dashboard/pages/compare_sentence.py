"""One sentence of two runs over the same corpus, side by side: each run's five stages, the first
divergence from the reference and the first step where the two hypotheses differ marked. B may
also be a perturbation of A (``beamscope perturb``): each side then shows its own source."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import dash
from dash import dcc, html

from dashboard import ids, queries, stages
from dashboard.stages import GraphIds, not_found
from dashboard.state import warehouse
from warehouse.compare import PairError, check_pair
from warehouse.perturbations import is_variant_pair

dash.register_page(__name__, path="/compare/sentence", name="Compare sentence", nav=False)


def layout(a: str | None = None, b: str | None = None, sent: str | None = None, **_: str) -> html.Div:
    wh = warehouse()
    variant = is_variant_pair(wh, a, b)
    try:
        a, b = (a, b) if variant else check_pair(wh, a, b)
    except PairError as e:
        return not_found(e.message)
    if not isinstance(sent, str) or not re.fullmatch(r"[0-9]{1,12}", sent):
        return not_found("A sentence id (sent=) is a non-negative whole number.")
    views = [queries.sentence_view(wh, run, int(sent)) for run in (a, b)]
    missing = list(dict.fromkeys(run for run, v in zip((a, b), views, strict=True) if v is None))
    if missing:
        who = f"Run {missing[0]} has" if len(missing) == 1 else f"Runs {missing[0]} and {missing[1]} have"
        return not_found(f"{who} no sentence {sent}.")
    hyps = [v.target_steps["token"].to_list() for v in views]
    differ = stages.first_difference(*hyps)
    same = "A and B produced the same hypothesis."
    said = same if differ is None else f"A and B first differ at step {differ} (outlined in blue)."
    s = views[0].sentence
    back = (
        ("/perturbations", "the perturbations")
        if variant
        else ("/compare?" + urlencode({"a": a, "b": b}), "the comparison")
    )
    shared = () if variant else ("source", "reference")  # a variant has its own source and reference
    header = [
        html.H3(f"Sentence {sent}: A = {a}  vs  B = {b}" + (" (a perturbation of A)" if variant else "")),
        html.Table([html.Tr([html.Th(k), html.Td(s[k] or "")]) for k in shared], className="simple"),
        html.P([said, " ", dcc.Link(f"back to {back[1]}", href=back[0])]),
    ]
    rows = ("source", "reference", "hypothesis") if variant else ("hypothesis",)
    sides = [
        _side(name, run, view, sent, differ, rows)
        for name, run, view in zip(("a", "b"), (a, b), views, strict=True)
    ]
    return html.Div([*header, html.Div(sides, className="grid2")], className="page")


def _side(
    name: str, run: str, view: queries.SentenceView, sent: str, differ: int | None, rows: tuple[str, ...]
) -> html.Div:
    graph_ids = GraphIds(*(f"{prefix}-{name}" for prefix in (ids.PAIR_ATTN, ids.PAIR_TOPK, ids.PAIR_BEAM)))
    return html.Div(
        [
            html.H3(f"{name.upper()}: {run}"),
            dcc.Link(
                "this run's sentence page (heads, neighbours, what-if)", href=f"/run/{run}/sentence/{sent}"
            ),
            stages.summary(view, rows=rows),
            *stages.stages(view, graph_ids, differ=differ),
        ],
        className="pair-side",
        id=f"{ids.PAIR_SIDE}-{name}",
    )
