"""The dashboard's Plotly figures, one function per chart, from the plain data of ``collect``.

Each returns the figure only; ``render`` turns it into a div and places it with the
templates. Plotly is imported inside the functions, so importing the package stays cheap.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from custseg.dashboard.collect import SPEND_BANDS, TIER_ORDER

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def pct(v: float | None) -> str:
    """A share as the page prints it."""
    return "-" if v is None else f"{v:.1%}"


def money(v: float | None, cur: str) -> str:
    """An amount as the page prints it, in whole currency units."""
    return "-" if v is None else f"{'-' if v < 0 else ''}{cur}{abs(v):,.0f}"


def by_tier(rows: list[dict], key: str) -> list[dict]:
    """Rows in the tier order Low, Mid, High (others last)."""
    return sorted(rows, key=lambda r: TIER_ORDER.index(r[key]) if r[key] in TIER_ORDER else 99)


def sales_trend(s: dict, cur: str) -> Any:
    import plotly.graph_objects as go

    x = [f"{r['year']}-{r['month']:02d}" for r in s["months"]]
    partial = s.get("partial", {})
    fig = go.Figure(go.Scatter(
        x=x, y=[r["revenue"] for r in s["months"]], mode="lines+markers+text",
        name="revenue", text=[f"partial: {partial[m]}" if m in partial else "" for m in x],
        textposition="top center",
        marker={"symbol": ["circle-open" if m in partial else "circle" for m in x],
                "size": [12 if m in partial else 7 for m in x]}))
    note = " (open markers: months the data covers only in part)" if partial else ""
    fig.update_layout(title=f"Monthly revenue{note}", yaxis_title=f"revenue ({cur})")
    return fig


def sales_country(c: list[dict]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[r["country"] for r in c], y=[r["revenue"] for r in c],
                           customdata=[[r["customers"], pct(r["revenue_growth"])] for r in c],
                           hovertemplate="%{x}: %{y:,.0f}<br>customers %{customdata[0]}"
                                         "<br>growth %{customdata[1]}<extra></extra>"))
    fig.update_layout(title=f"Revenue by country (top {len(c)})")
    return fig


def sales_products(products: list[dict]) -> Any:
    import plotly.graph_objects as go

    p = list(reversed(products))
    fig = go.Figure(go.Bar(y=[f"{r['description'] or r['stock_code']}" for r in p],
                           x=[r["revenue"] for r in p], orientation="h"))
    fig.update_layout(title=f"Top {len(p)} products by revenue", margin={"l": 260})
    return fig


def purchase_nature(n: list[dict]) -> Any:
    import plotly.graph_objects as go

    names = [r["purchase_class"] for r in n]
    fig = go.Figure([go.Bar(name="share of orders", x=names, y=[r["share_orders"] for r in n]),
                     go.Bar(name="share of revenue", x=names,
                            y=[r["share_revenue"] for r in n])])
    fig.update_layout(title="Purchase nature (orders by units on them)",
                      yaxis_tickformat=".0%", barmode="group")
    return fig


def segment_sizes(s: dict) -> Any:
    import plotly.graph_objects as go

    seg = s["segments"]
    n = sum(r["customers"] for r in seg) or 1
    names = [r["segment"] for r in seg]
    fig = go.Figure([go.Bar(name="share of customers", x=names,
                            y=[r["customers"] / n for r in seg]),
                     go.Bar(name="share of revenue", x=names,
                            y=[r["share_revenue"] for r in seg])])
    fig.update_layout(title=f"RFM segments as of {s['as_of']}", barmode="group",
                      yaxis_tickformat=".0%")
    return fig


def rf_heatmap(rf: list[dict]) -> Any:
    import plotly.graph_objects as go

    grid = [[0] * 5 for _ in range(5)]
    for r in rf:
        grid[r["r_score"] - 1][r["f_score"] - 1] = r["count"]
    fig = go.Figure(go.Heatmap(z=grid, x=[f"F{i}" for i in range(1, 6)],
                               y=[f"R{i}" for i in range(1, 6)], colorscale="Blues",
                               text=grid, texttemplate="%{text}"))
    fig.update_layout(title="Customers by recency (R) and frequency (F) score")
    return fig


def value_tiers(tiers: list[dict]) -> Any:
    import plotly.graph_objects as go

    tiers = by_tier(tiers, "value_tier")
    fig = go.Figure([go.Bar(name="customers", x=[r["value_tier"] for r in tiers],
                            y=[r["customers"] for r in tiers])])
    fig.update_layout(title="Value tiers (from the M score)")
    return fig


def cluster_scatter(c: dict) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "log recency vs log spend", "log frequency vs log spend"))
    for cl in sorted({r["cluster"] for r in c["scatter"]}):
        pts = [r for r in c["scatter"] if r["cluster"] == cl]
        label = f"{cl}: {pts[0]['cluster_name']}"
        for col, x in ((1, "log_r"), (2, "log_f")):
            fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p["log_m"] for p in pts],
                                     mode="markers", marker={"size": 4, "opacity": 0.6},
                                     name=label, legendgroup=label, showlegend=col == 1,
                                     marker_color=COLOURS[cl % len(COLOURS)]),
                          row=1, col=col)
    fig.update_layout(title=f"Customers by cluster ({len(c['scatter']):,} of "
                            f"{c['scatter_of']:,}, a seeded sample)")
    return fig


def selection_cost(sel: list[dict], cost: str, as_of: dt.date) -> Any:
    """The BIC or the within-cluster sum of squares by k, with the elbow marked."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[r["k"] for r in sel], y=[r[cost] for r in sel],
                               mode="lines+markers"))
    for r in sel:
        if r["elbow"]:
            fig.add_vline(x=r["k"], line_dash="dash", annotation_text=f"elbow k={r['k']}")
    fig.update_layout(title=("BIC" if cost == "bic" else "Elbow: within-cluster sum of squares")
                      + f" ({as_of})", xaxis_title="k")
    return fig


def selection_quality(sel: list[dict], chosen: dict | None) -> Any:
    """Silhouette and stability by k, with the chosen k marked."""
    import plotly.graph_objects as go

    ks = [r["k"] for r in sel]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ks, y=[r["silhouette"] for r in sel], mode="lines+markers",
                             name="silhouette", line_color="#2ca02c"))
    fig.add_trace(go.Scatter(x=ks, y=[r.get("stability") for r in sel], mode="lines+markers",
                             name="stability (mean ARI of resamples)", line_color="#9467bd"))
    if chosen is not None:
        fig.add_vline(x=chosen["k"], line_dash="dash", annotation_text=f"chosen k={chosen['k']}")
    fig.update_layout(title="Silhouette and stability by k", xaxis_title="k")
    return fig


def band_label(i: int, cur: str) -> str:
    """The label of predicted-spend band ``i``."""
    lo, hi = SPEND_BANDS[i], SPEND_BANDS[i + 1]
    if i == 0:
        return f"under {cur}1"
    return f"{cur}{lo:,.0f}+" if math.isinf(hi) else f"{cur}{lo:,.0f}-{hi:,.0f}"


def spend_distribution(v: dict, cur: str) -> Any:
    import plotly.graph_objects as go

    counts = {int(r["band"]): r["customers"] for r in v["bands"]}
    labels = [band_label(i, cur) for i in range(len(SPEND_BANDS) - 1)]
    fig = go.Figure(go.Bar(x=labels, y=[counts.get(i, 0) for i in range(len(labels))]))
    fig.update_layout(title=f"Predicted spend over the next {v['horizon_days']} days "
                            f"(as of {v['as_of']}; total {money(v['total_predicted'], cur)})",
                      yaxis_title="customers")
    return fig


def predicted_tiers(tiers: list[dict]) -> Any:
    import plotly.graph_objects as go

    tiers = by_tier(tiers, "predicted_tier")
    fig = go.Figure(go.Bar(x=[r["predicted_tier"] for r in tiers],
                           y=[r["customers"] for r in tiers]))
    fig.update_layout(title="Predicted value tier", yaxis_title="customers")
    return fig


def backtest_deciles(v: dict) -> Any:
    import plotly.graph_objects as go

    d = v["deciles"]
    x = [f"D{r['decile']}" for r in d]
    fig = go.Figure([go.Bar(name="mean predicted", x=x, y=[r["mean_predicted"] for r in d]),
                     go.Bar(name="mean actual", x=x, y=[r["mean_actual"] for r in d])])
    fig.update_layout(title=f"Backtest at {v['backtest_as_of']} ({v['backtest_horizon']} "
                            f"days): {v['deciles_model']} by predicted decile (D1 = highest)",
                      barmode="group")
    return fig


CALIBRATION = (
    ("by_repeat", "calibration-repeat", "Purchases in the horizon by repeat purchases before it "
     "(per customer)", "repeat purchases before (7 = 7 or more)"),
    ("cumulative", "calibration-cumulative", "Cumulative purchases over the horizon "
     "(all customers)", "days into the horizon"))


def calibration(rows: list[dict], title: str, x_title: str, since: dt.date) -> Any:
    """Expected (BG/NBD, Pareto/NBD) against actual purchase days."""
    import plotly.graph_objects as go

    xs = [r["x"] for r in rows]
    fig = go.Figure([go.Scatter(x=xs, y=[r["actual"] for r in rows], name="actual",
                                mode="lines+markers"),
                     go.Scatter(x=xs, y=[r["expected_bgnbd"] for r in rows], name="BG/NBD",
                                mode="lines+markers"),
                     go.Scatter(x=xs, y=[r["expected_paretonbd"] for r in rows],
                                name="Pareto/NBD", mode="lines+markers")])
    fig.update_layout(title=f"{title}: expected against actual, from {since}",
                      xaxis_title=x_title, yaxis_title="purchase days")
    return fig


def segment_migration(c: dict) -> Any:
    import plotly.graph_objects as go

    moves = [m for m in c["moves"] if m["customers"] > 0]
    left = sorted({m["from_segment"] for m in moves})
    right = sorted({m["to_segment"] for m in moves})
    labels = [f"{s} ({c['before']})" for s in left] + [f"{s} ({c['after']})" for s in right]
    fig = go.Figure(go.Sankey(
        node={"label": labels, "pad": 12},
        link={"source": [left.index(m["from_segment"]) for m in moves],
              "target": [len(left) + right.index(m["to_segment"]) for m in moves],
              "value": [m["customers"] for m in moves]}))
    fig.update_layout(title=f"Segment migration {c['before']} to {c['after']} (customers)")
    return fig


def quarantine_reasons(r: list[dict]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[x["reason"] for x in r], y=[x["count"] for x in r]))
    fig.update_layout(title="Quarantined rows by reason", yaxis_title="rows")
    return fig
