"""Figures: pure functions from frames to plotly figures (no Dash, no queries).

Text from sentences is passed to plotly as data (hover text, tick labels) with ``safe``: plotly
renders a few HTML tags in such text, so tokens are escaped and always show as typed.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl

# plotly_white's layout without its per-trace-type defaults, as every figure's default: with the
# whole template a figure took ~30 ms more to build (a deep copy and validation of the defaults of
# every trace type); the figures set their own colours and colour scales
pio.templates["beamscope"] = go.layout.Template(layout=pio.templates["plotly_white"].layout)
pio.templates.default = "beamscope"

STAGE_COLORS = {
    "correct": "#59a14f", "search": "#e15759", "encoder": "#b07aa1", "decoder": "#f28e2b",
    "attention": "#4e79a7", "prediction": "#edc948", "no_reference": "#bab0ac",
}  # fmt: skip
STATUS_COLORS = {"root": "#333333", "kept": "#4e79a7", "finished": "#59a14f", "pruned": "#c8c8c8"}
HIGHLIGHT = "rgba(255, 165, 0, 0.9)"


def _placeholder(fig: go.Figure) -> None:
    """Shape 0 of the step maps is the hover highlight, replaced in place (see step_highlight)."""
    fig.add_shape(type="rect", x0=0, x1=0, y0=0, y1=0, visible=False)


def _layout(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def stage_bar(stages: pl.DataFrame) -> go.Figure:
    """Sentences per stage; each bar carries its stage for click-through."""
    fig = go.Figure(
        go.Bar(
            x=stages["stage"].to_list(),
            y=stages["n"].to_list(),
            marker_color=[STAGE_COLORS.get(s, "#888") for s in stages["stage"]],
            customdata=stages["stage"].to_list(),
            text=[f"{100 * s:.1f}%" for s in stages["share_of_sentences"]],
            hovertemplate="%{x}: %{y} sentences (%{text})<extra></extra>",
        )
    )
    return _layout(fig, "Sentences by blamed stage (click a bar)")


def tag_bar(tags: pl.DataFrame) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=tags["tag"].to_list(),
            y=tags["n"].to_list(),
            customdata=tags["tag"].to_list(),
            marker_color="#76b7b2",
            hovertemplate="%{x}: %{y} wrong sentences<extra></extra>",
        )
    )
    return _layout(fig, "Error tags (click a bar)")


def histogram(bins: pl.DataFrame, width: float, title: str) -> go.Figure:
    lows = bins["bin"].to_list()
    fig = go.Figure(
        go.Bar(
            x=[b + width / 2 for b in lows],
            y=bins["n"].to_list(),
            width=width * 0.95,
            customdata=[[b, b + width] for b in lows],
            hovertemplate="[%{customdata[0]}, %{customdata[1]}): %{y}<extra></extra>",
        )
    )
    return _layout(fig, title)


def bucket_chart(buckets: pl.DataFrame, bucketing: str, title: str) -> go.Figure:
    b = buckets.filter(pl.col("bucketing") == bucketing)
    fig = go.Figure(
        go.Bar(
            x=b["bucket"].to_list(),
            y=b["f_measure"].to_list(),
            customdata=b["bucket"].to_list(),
            text=[f"{n} tokens" for n in b["ref_tokens"]],
            hovertemplate="%{x}: F %{y:.3f} (%{text})<extra></extra>",
            marker_color="#9c755f",
            error_y=_interval(b, "f_measure", "f_low", "f_high"),
        )
    )
    fig.update_yaxes(range=[0, 1.05], title="token F-measure")
    return _layout(fig, title)


def bucket_pair_chart(
    a: pl.DataFrame, b: pl.DataFrame, bucketing: str, title: str, names: tuple[str, str]
) -> go.Figure:
    """Two runs' token F per bucket side by side, each with its interval as error bars."""
    fig = go.Figure()
    both = pl.concat([x.filter(pl.col("bucketing") == bucketing) for x in (a, b)], how="diagonal_relaxed")
    order = both.group_by("bucket").agg(pl.col("bucket_order").min()).sort("bucket_order", "bucket")
    for frame, name, color in ((a, names[0], "#9c755f"), (b, names[1], "#4e79a7")):
        sel = frame.filter(pl.col("bucketing") == bucketing)
        fig.add_trace(
            go.Bar(
                x=sel["bucket"].to_list(),
                y=sel["f_measure"].to_list(),
                name=safe(name),
                text=[f"{n} tokens" for n in sel["ref_tokens"]],
                hovertemplate="%{x}: F %{y:.3f} (%{text})<extra>%{fullData.name}</extra>",
                marker_color=color,
                error_y=_interval(sel, "f_measure", "f_low", "f_high"),
            )
        )
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.15))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order["bucket"].to_list())
    fig.update_yaxes(range=[0, 1.05], title="token F-measure")
    return _layout(fig, title)


def _interval(b: pl.DataFrame, value: str, low: str, high: str) -> dict | None:
    """Plotly error bars from an interval's bounds (None when the frame has none)."""
    if low not in b.columns:
        return None
    v, lo, hi = (b[c].cast(pl.Float64).to_numpy() for c in (value, low, high))
    plus, minus = np.nan_to_num(np.clip(hi - v, 0, None)), np.nan_to_num(np.clip(v - lo, 0, None))
    return {"type": "data", "symmetric": False, "array": plus.tolist(), "arrayminus": minus.tolist()}


def safe(text: str) -> str:
    """Text for plotly labels: plotly renders some HTML tags in them (<b>, <br>, <a>), so a
    token is shown with its characters escaped."""
    return html.escape(str(text), quote=False)


def _step_labels(tokens: list[str]) -> list[str]:
    return [f"{i}:{safe(t)}" for i, t in enumerate(tokens)]


def attention_heatmap(
    weights: list[list[float]],
    src_tokens: list[str],
    tgt_tokens: list[str],
    title: str,
    divergence: int | None = None,
) -> go.Figure:
    """Target steps (rows) x source tokens (columns); the divergence step is outlined."""
    fig = go.Figure(
        go.Heatmap(
            z=weights,
            x=_step_labels(src_tokens),
            y=_step_labels(tgt_tokens),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="step %{y} reads %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    _placeholder(fig)
    if divergence is not None and divergence < len(tgt_tokens):
        fig.add_hrect(y0=divergence - 0.5, y1=divergence + 0.5, line=dict(color="#e15759", width=2))
    return _layout(fig, title, height=max(260, 22 * len(tgt_tokens) + 120))


def attribution_heatmap(
    scores: list[list[float | None]],
    col_tokens: list[str],
    row_tokens: list[str],
    title: str,
    signed: bool = True,
    divergence: int | None = None,
) -> go.Figure:
    """Target steps (rows) x input tokens (columns) of attribution scores, on the attention heatmap's
    axes; signed scores diverge from 0 (red: pushed the produced token up, blue: down)."""
    top = max((abs(v) for row in scores for v in row if v is not None), default=1.0) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=scores,
            x=_step_labels(col_tokens),
            y=_step_labels(row_tokens),
            colorscale="RdBu_r" if signed else "Oranges",
            zmin=-top if signed else 0,
            zmax=top,
            hovertemplate="step %{y} from %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    if divergence is not None and divergence < len(row_tokens):
        fig.add_hrect(y0=divergence - 0.5, y1=divergence + 0.5, line=dict(color="#e15759", width=2))
    return _layout(fig, title, height=max(260, 22 * len(row_tokens) + 120))


def topk_figure(steps: pl.DataFrame, ref_tokens: list[str] | None, title: str) -> go.Figure:
    """Top-k predictions per step: columns are steps, rows ranks; text is the token."""
    tokens = steps["topk_tokens"].to_list()
    probs = steps["topk_probs"].to_list()
    chosen = steps["token"].to_list()
    k = max((len(t) for t in tokens), default=0)
    z = [[p[r] if r < len(p) else None for p in probs] for r in range(k)]
    text = [[safe(t[r]) if r < len(t) else "" for t in tokens] for r in range(k)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=_step_labels(chosen),
            y=[f"#{r + 1}" for r in range(k)],
            text=text,
            texttemplate="%{text}",
            colorscale="Greens",
            zmin=0,
            zmax=1,
            hovertemplate="step %{x} rank %{y}: %{text} p=%{z:.3f}<extra></extra>",
        )
    )
    _placeholder(fig)
    for t, (cands, tok) in enumerate(zip(tokens, chosen, strict=True)):
        if tok in cands:
            r = cands.index(tok)
            fig.add_shape(
                type="rect", x0=t - 0.5, x1=t + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color="#333", width=2)
            )
        if ref_tokens is not None and t < len(ref_tokens) and ref_tokens[t] in cands and ref_tokens[t] != tok:
            r = cands.index(ref_tokens[t])
            fig.add_shape(
                type="rect",
                x0=t - 0.5,
                x1=t + 0.5,
                y0=r - 0.5,
                y1=r + 0.5,
                line=dict(color="#e15759", width=2, dash="dot"),
            )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, title, height=max(260, 26 * k + 120))


def beam_tree(nodes: pl.DataFrame, title: str) -> go.Figure:
    """Every hypothesis the beam considered: x = step, y = rank; edges to parents; best path bold."""
    steps = nodes["step"].to_list()
    ranks = nodes["rank_in_beam"].to_list()
    y = [0.0 if s == 0 else float(r) for s, r in zip(steps, ranks, strict=True)]
    pos = {nid: (s, yy) for nid, s, yy in zip(nodes["node_id"].to_list(), steps, y, strict=True)}
    edges_x: dict[bool, list] = {True: [], False: []}
    edges_y: dict[bool, list] = {True: [], False: []}
    for nid, parent, best in nodes.select("node_id", "parent_id", "on_best_path").iter_rows():
        if parent is None:
            continue
        (x0, y0), (x1, y1) = pos[parent], pos[nid]
        edges_x[best] += [x0, x1, None]
        edges_y[best] += [y0, y1, None]
    fig = go.Figure()
    for best, color, width in ((False, "#d0d0d0", 1), (True, "#e15759", 3)):
        fig.add_trace(
            go.Scatter(
                x=edges_x[best],
                y=edges_y[best],
                mode="lines",
                hoverinfo="skip",
                line=dict(color=color, width=width),
                showlegend=False,
            )
        )
    for status, color in STATUS_COLORS.items():
        sel = nodes.filter(pl.col("status") == status)
        if sel.height == 0:
            continue
        fig.add_trace(
            go.Scatter(
                x=sel["step"].to_list(),
                y=[
                    0.0 if s == 0 else float(r) for s, r in zip(sel["step"], sel["rank_in_beam"], strict=True)
                ],
                mode="markers+text",
                name=status,
                text=[safe(t) for t in sel["token"]],
                textposition="top center",
                marker=dict(
                    color=color,
                    size=[12 if b else 8 for b in sel["on_best_path"]],
                    line=dict(width=[2 if b else 0 for b in sel["on_best_path"]], color="#e15759"),
                ),
                customdata=list(zip(sel["token_logprob"].to_list(), sel["score"].to_list(), strict=True)),
                hovertemplate="%{text}<br>logprob %{customdata[0]:.3f}<br>score %{customdata[1]:.3f}"
                "<extra>" + status + "</extra>",
            )
        )
    fig.update_yaxes(autorange="reversed", title="rank among candidates")
    fig.update_xaxes(title="step", dtick=1)
    return _layout(fig, title, height=420)


def step_highlight(step: int, vertical: bool) -> dict:
    """Shape 0 of a step map outlining one step: a column of the top-k map (``vertical``) or a
    row of the attention map."""
    line = dict(color=HIGHLIGHT, width=3)
    if vertical:
        return dict(type="rect", xref="x", yref="paper", x0=step - 0.5, x1=step + 0.5, y0=0, y1=1, line=line)
    return dict(type="rect", xref="paper", yref="y", x0=0, x1=1, y0=step - 0.5, y1=step + 0.5, line=line)


_GROUP_STYLE = {  # group: (colour, marker size, draw the path)
    "encoder": ("#4e79a7", 10, True),
    "decoder": ("#f28e2b", 10, True),
    "encoder neighbour": ("#a0c4e8", 6, False),
    "decoder neighbour": ("#f7c58f", 6, False),
}


def trajectory(points: pl.DataFrame, title: str, axes: tuple[str, str] = ("PC 1", "PC 2")) -> go.Figure:
    """A sentence's states as paths (source order, target steps) among their nearest training
    states; a neighbour's customdata is [training run, training sentence id]."""
    fig = go.Figure()
    for group, (color, size, path) in _GROUP_STYLE.items():
        sel = points.filter(pl.col("group") == group) if points.height else points
        if sel.height == 0:
            continue
        labels = [f"{p}:{safe(t)}" for p, t in zip(sel["position"], sel["token"], strict=True)]
        fig.add_trace(
            go.Scatter(
                x=sel["x"].to_list(),
                y=sel["y"].to_list(),
                mode="lines+markers+text" if path else "markers",
                name=group,
                text=labels if path else None,
                textposition="top center",
                marker=dict(color=color, size=size),
                line=dict(color=color),
                customdata=None if path else sel.select("train_run", "train_sent_id").rows(),
                hovertext=labels,
                hovertemplate="%{hovertext}"
                + (
                    "<extra>" + group + "</extra>"
                    if path
                    else "<br>training sentence %{customdata[1]}<extra></extra>"
                ),
            )
        )
    fig.update_xaxes(title=axes[0])
    fig.update_yaxes(title=axes[1])
    return _layout(fig, title, height=460)


def corpus_map(points: pl.DataFrame, title: str, axes: tuple[str, str] = ("PC 1", "PC 2")) -> go.Figure:
    """Decoder states of sampled sentences coloured by the sentence's stage; customdata = sent_id."""
    fig = go.Figure()
    for stage, color in STAGE_COLORS.items():
        sel = points.filter(pl.col("stage") == stage) if points.height else points
        if sel.height == 0:
            continue
        fig.add_trace(
            go.Scattergl(
                x=sel["x"].to_list(),
                y=sel["y"].to_list(),
                mode="markers",
                name=stage,
                marker=dict(
                    color=color, size=4 if stage == "correct" else 8, opacity=0.5 if stage == "correct" else 1
                ),
                customdata=sel["sent_id"].to_list(),
                hovertext=[
                    f"sentence {s} step {t}: {safe(tok)}"
                    for s, t, tok in sel.select("sent_id", "step", "token").rows()
                ],
                hovertemplate="%{hovertext}<extra>" + stage + "</extra>",
            )
        )
    fig.update_xaxes(title=axes[0])
    fig.update_yaxes(title=axes[1])
    return _layout(fig, title, height=420)
