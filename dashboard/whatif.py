"""The sentence view's what-if section (goal G3): re-decode live under an intervention and show
the original and the alternative side by side, all five stages each.

Every action re-decodes the text in the source box (the original source unless edited) with
the run's own model and decoding settings, plus that action's intervention: a forced prefix
(typed, or a top-k alternative clicked in the prediction map) or an attention edit. Nothing is
written to the warehouse unless the user saves the alternative as a new run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dashboard import figures, ids, queries, stages
from dashboard.components import labelled
from dashboard.state import model_for, warehouse
from pipeline.models import run_decoding
from pipeline.models.protocol import AttentionEdit
from pipeline.neighbours import training_states
from pipeline.taxonomy import Taxonomy
from pipeline.whatif import Intervention, WhatIfResult, redecode, save_run
from schemas import BeamscopeError

_LABEL = re.compile(r"^(\d+):")
_RANK = re.compile(r"^#(\d+)$")


def section(view: queries.SentenceView) -> html.Div:
    """The what-if controls, prefilled from the sentence."""
    return html.Div(
        [
            html.H4("What if? Re-decode with the run's model (click a top-k alternative to force it)"),
            _source_controls(view.sentence["source"]),
            _attention_controls(view),
            dcc.Store(id=ids.WHATIF_STORE),
            dcc.Loading(html.Div(id=ids.WHATIF_RESULT)),
            html.Div(
                [
                    html.Button("Save the alternative as a new run", id=ids.WHATIF_SAVE),
                    html.Span(id=ids.WHATIF_SAVED, className="muted"),
                ],
                className="filters",
            ),
        ]
    )


def _source_controls(source: str) -> html.Div:
    """Edit the source, or force the output's first tokens."""
    return html.Div(
        [
            labelled(
                "source",
                dcc.Input(
                    id=ids.WHATIF_SOURCE, value=source, type="text", debounce=False, style={"width": "420px"}
                ),
            ),
            html.Button("Re-decode", id=ids.WHATIF_RUN),
            labelled(
                "force the output to start with",
                dcc.Input(id=ids.WHATIF_PREFIX, type="text", placeholder="a target prefix"),
            ),
            html.Button("Force prefix", id=ids.WHATIF_FORCE),
        ],
        className="filters",
    )


def _attention_controls(view: queries.SentenceView) -> html.Div:
    """Edit the cross-attention of one output step, in every layer and head or in chosen ones (the
    layers and heads the run stored: traced with ``--per-head``)."""
    src = view.source_tokens["token"].to_list()
    pairs = queries.layer_heads(view.attention)
    layers = [{"label": f"layer {i}", "value": i} for i in sorted({layer for layer, _ in pairs})]
    heads = [{"label": f"head {i}", "value": i} for i in sorted({head for _, head in pairs})]
    hyp = view.target_steps["token"].to_list()
    steps = [{"label": f"{t}: {tok}", "value": t} for t, tok in enumerate(hyp)]
    positions = [{"label": f"{i}: {tok}", "value": i} for i, tok in enumerate(src)]
    modes = [{"label": "set (attend only there)", "value": "set"}, {"label": "scale by", "value": "scale"}]
    return html.Div(
        [
            labelled("attention of step", dcc.Dropdown(steps, None, id=ids.WHATIF_STEP, clearable=False)),
            labelled(
                "on source tokens",
                dcc.Dropdown(positions, [], id=ids.WHATIF_POS, multi=True),
                minWidth="260px",
            ),
            labelled(
                "in layers",
                dcc.Dropdown(layers, [], id=ids.WHATIF_LAYERS, multi=True, placeholder="all"),
                minWidth="140px",
            ),
            labelled(
                "heads",
                dcc.Dropdown(heads, [], id=ids.WHATIF_HEADS, multi=True, placeholder="all"),
                minWidth="140px",
            ),
            dcc.RadioItems(modes, "set", id=ids.WHATIF_MODE),
            dcc.Input(id=ids.WHATIF_FACTOR, type="number", value=0.0, step=0.1, style={"width": "70px"}),
            html.Button("Edit attention", id=ids.WHATIF_EDIT),
        ],
        className="filters",
    )


def _intervention(
    trigger: Any,
    source: str | None,
    prefix_text: str | None,
    step: Any,
    positions: list[int] | None,
    mode: str,
    factor: float | None,
    topk_click: dict | None,
    layers: list[int] | None,
    heads: list[int] | None,
    view: queries.SentenceView,
    model: Any,
) -> Intervention:
    """The intervention an action asks for (a BeamscopeError when it is incomplete)."""
    source = (source or "").strip()
    original = view.sentence["source"]
    reference = view.sentence["reference"] if source == original else None  # an edited source has none
    prefix: tuple[int, ...] = ()
    edit = None
    if trigger == ids.TOPK:
        point = (topk_click or {}).get("points", [{}])[0]
        t, r = _LABEL.match(str(point.get("x", ""))), _RANK.match(str(point.get("y", "")))
        if t is None or r is None:
            raise BeamscopeError("click a cell of the top-k map")
        step_i, rank = int(t.group(1)), int(r.group(1)) - 1
        row = view.target_steps.row(step_i, named=True)
        if rank >= len(row["topk_token_ids"]):
            raise BeamscopeError("that top-k cell is empty")
        prefix = (*view.target_steps["token_id"].to_list()[:step_i], row["topk_token_ids"][rank])
        source, reference = original, view.sentence["reference"]
    elif trigger == ids.WHATIF_FORCE:
        if not prefix_text:
            raise BeamscopeError("type a prefix to force")
        prefix = tuple(model.tgt_ids(prefix_text))
    elif trigger == ids.WHATIF_EDIT:
        if step is None or not positions:
            raise BeamscopeError("pick a target step and at least one source token")
        edit = AttentionEdit(
            int(step),
            tuple(sorted(int(p) for p in positions)),
            mode,
            float(factor or 0.0),
            tuple(sorted(layers or [])),
            tuple(sorted(heads or [])),
        )
    return Intervention(source, reference, prefix, edit)


def _whatif(key: dict, intervention: Intervention) -> tuple[queries.SentenceView, WhatIfResult, dict]:
    wh = warehouse()
    run = queries.run_info(wh, key["run"])
    model = model_for(run)
    options = json.loads(run["options"])
    taxonomy = Taxonomy.from_options(options.get("taxonomy", {}))
    train = run["neighbours_run"]  # blamed as the original was: with the same training states
    training = (
        None
        if train is None
        else wh.memo(("training_states", train), lambda: training_states(wh.root, train, build=False))
    )
    decoding = run_decoding(run)
    agreement = options.get("agreement", "all")
    result = redecode(model, intervention, decoding, training, taxonomy, agreement)
    return queries.view_from_tables(result.tables, result.vocabulary), result, run


def _stages(view: queries.SentenceView, title: str, score_note: str = "") -> html.Div:
    """One column of the comparison: the five stages of one decoding."""
    s = view.sentence
    src = view.source_tokens["token"].to_list()
    ref = view.reference_steps["token"].to_list() if view.reference_steps.height else None
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    return html.Div(
        [
            html.H4(title),
            html.Div(["hypothesis: ", html.B(s["hypothesis"])], className="whatif-hyp"),
            html.Div(f"score {fmt(s['hyp_score'])}  chrF {fmt(s['chrf'])}  stage {s['stage']}{score_note}"),
            html.Div(["encoder: ", *(html.Span(t, className="tok") for t in src)], className="tokens"),
            dcc.Graph(figure=stages.attention_figure(view)),
            dcc.Graph(figure=figures.topk_figure(view.target_steps, ref, "Top-k")),
            dcc.Graph(figure=figures.beam_tree(view.beam_nodes, "Beam tree")),
        ],
        className="panel",
    )


def describe(intervention: Intervention, original: str, model: Any) -> str:
    parts = []
    if intervention.source != original:
        parts.append(f"source edited to {intervention.source!r}")
    if intervention.prefix:
        parts.append(f"output forced to start with {model.detokenize(list(intervention.prefix))!r}")
    if intervention.edit is not None:
        e = intervention.edit
        how = "only" if e.mode == "set" else f"scaled by {e.factor:g} on"
        where = "".join(
            f" in {name} {list(c)}" for name, c in (("layers", e.layers), ("heads", e.heads)) if c
        )
        parts.append(f"attention of step {e.step} {how} source positions {list(e.positions)}{where}")
    return "; ".join(parts) or "no change (the same decoding again)"


@callback(
    Output(ids.WHATIF_RESULT, "children"),
    Output(ids.WHATIF_STORE, "data"),
    Input(ids.WHATIF_RUN, "n_clicks"),
    Input(ids.WHATIF_FORCE, "n_clicks"),
    Input(ids.WHATIF_EDIT, "n_clicks"),
    Input(ids.TOPK, "clickData"),
    State(ids.WHATIF_SOURCE, "value"),
    State(ids.WHATIF_PREFIX, "value"),
    State(ids.WHATIF_STEP, "value"),
    State(ids.WHATIF_POS, "value"),
    State(ids.WHATIF_MODE, "value"),
    State(ids.WHATIF_FACTOR, "value"),
    State(ids.WHATIF_LAYERS, "value"),
    State(ids.WHATIF_HEADS, "value"),
    State(ids.SENTENCE_KEY, "data"),
    prevent_initial_call=True,
)
def run_whatif(
    _run, _force, _edit, topk_click, source, prefix, step, positions, mode, factor, layers, heads, key
):  # noqa: ANN001, PLR0913
    wh = warehouse()
    view = queries.sentence_view(wh, key["run"], key["sent_id"])
    try:
        model = model_for(queries.run_info(wh, key["run"]))
        iv = _intervention(
            dash.ctx.triggered_id,
            source,
            prefix,
            step,
            positions,
            mode,
            factor,
            topk_click,
            layers,
            heads,
            view,
            model,
        )
        alt, _, _ = _whatif(key, iv)
    except BeamscopeError as e:
        return html.Div(str(e), className="error"), None
    delta = alt.sentence["hyp_score"] - view.sentence["hyp_score"]
    note = f"  (score {delta:+.3f} vs original)"
    stored = {
        "source": iv.source,
        "reference": iv.reference,
        "prefix": list(iv.prefix),
        "edit": None if iv.edit is None else dataclasses.asdict(iv.edit),
    }
    return html.Div(
        [
            html.P(
                ["What if: ", html.B(describe(iv, view.sentence["source"], model))], id=ids.WHATIF_SUMMARY
            ),
            html.Div([_stages(view, "Original"), _stages(alt, "What-if", note)], className="grid2"),
        ]
    ), stored


@callback(
    Output(ids.WHATIF_SAVED, "children"),
    Input(ids.WHATIF_SAVE, "n_clicks"),
    State(ids.WHATIF_STORE, "data"),
    State(ids.SENTENCE_KEY, "data"),
    prevent_initial_call=True,
)
def save_whatif(_n, stored: dict | None, key: dict) -> str:
    if not stored:
        return "nothing to save yet: run a what-if first"
    edit = stored["edit"]
    iv = Intervention(
        stored["source"],
        stored["reference"],
        tuple(stored["prefix"]),
        None
        if edit is None
        else AttentionEdit(**{k: tuple(v) if isinstance(v, list) else v for k, v in edit.items()}),
    )
    try:
        _, result, run = _whatif(key, iv)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        run_id = save_run(warehouse().root, f"what-if-{key['sent_id']}-{stamp}", result, run, model_for(run))
    except BeamscopeError as e:
        return f"not saved: {e}"
    return f"saved as run {run_id}"
