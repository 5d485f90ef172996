"""The dashboard page: plain data from ``collect`` rendered as one self-contained HTML file.

Plotly's JavaScript is embedded once, so the file opens offline.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from typing import Any

from custseg.config import Config
from custseg.dashboard.collect import SPEND_BANDS, TIER_ORDER, Kpis, Page


def _money(v: float | None, cur: str) -> str:
    return "-" if v is None else f"{'-' if v < 0 else ''}{cur}{abs(v):,.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def kpi_text(kpis: Kpis, cur: str) -> dict[str, str]:
    """The KPI values as the page prints them."""
    return {"customers": f"{kpis.customers:,}", "revenue": _money(kpis.revenue, cur),
            "orders": f"{kpis.orders:,}",
            "average_order_value": f"{cur}{kpis.average_order_value:,.2f}",
            "top20_share": _pct(kpis.top20_share)}


def _html_table(rows: list[dict], columns: list[tuple[str, str, Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _, _ in columns)
    body = []
    for r in rows:
        cells = "".join(f"<td>{fmt(r.get(key))}</td>" for _, key, fmt in columns)
        body.append(f"<tr>{cells}</tr>")
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


class _Charts:
    """Plotly figures turned into divs; the page script is added once by ``render``."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def div(self, fig: Any, chart_id: str, height: int = 380) -> str:
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                          template="plotly_white")
        self.ids.append(chart_id)
        return (f'<div class="chart" data-chart="{chart_id}">'
                + fig.to_html(full_html=False, include_plotlyjs=False, div_id=chart_id,
                              default_height=f"{height}px",
                              config={"displaylogo": False, "responsive": True})
                + "</div>")


def _sales_html(s: dict, ch: _Charts, cur: str) -> str:
    import plotly.graph_objects as go

    parts = []
    if s.get("months"):
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
        parts.append(ch.div(fig, "sales-trend"))
    if s.get("countries"):
        c = s["countries"]
        fig = go.Figure(go.Bar(x=[r["country"] for r in c], y=[r["revenue"] for r in c],
                               customdata=[[r["customers"], _pct(r["revenue_growth"])]
                                           for r in c],
                               hovertemplate="%{x}: %{y:,.0f}<br>customers %{customdata[0]}"
                                             "<br>growth %{customdata[1]}<extra></extra>"))
        fig.update_layout(title=f"Revenue by country (top {len(c)})")
        parts.append(ch.div(fig, "sales-country"))
        parts.append(_html_table(c, [
            ("country", "country", _num), ("customers", "customers", _num),
            ("orders", "orders", _num), ("revenue", "revenue", lambda v: _money(v, cur)),
            ("revenue per customer", "revenue_per_customer", lambda v: _money(v, cur)),
            (f"revenue growth (last {c[0]['growth_months']} months)", "revenue_growth", _pct),
            ("customer growth", "customer_growth", _pct)], "country-activity"))
    if s.get("products"):
        p = list(reversed(s["products"]))
        fig = go.Figure(go.Bar(y=[f"{r['description'] or r['stock_code']}" for r in p],
                               x=[r["revenue"] for r in p], orientation="h"))
        fig.update_layout(title=f"Top {len(p)} products by revenue",
                          margin={"l": 260})
        parts.append(ch.div(fig, "sales-products", height=420))
    if s.get("nature"):
        n = s["nature"]
        names = [r["purchase_class"] for r in n]
        fig = go.Figure([go.Bar(name="share of orders", x=names,
                                y=[r["share_orders"] for r in n]),
                         go.Bar(name="share of revenue", x=names,
                                y=[r["share_revenue"] for r in n])])
        fig.update_layout(title="Purchase nature (orders by units on them)",
                          yaxis_tickformat=".0%", barmode="group")
        parts.append(ch.div(fig, "purchase-nature"))
        parts.append(_html_table(n, [
            ("class", "purchase_class", _num), ("from units", "min_items", _num),
            ("to units", "max_items", _num), ("orders", "orders", _num),
            ("customers", "customers", _num), ("revenue", "revenue", lambda v: _money(v, cur)),
            ("average order", "average_order_value", lambda v: _money(v, cur))],
            "purchase-nature-table"))
    return "".join(parts)


def _segments_html(s: dict, actions: dict[str, str], ch: _Charts, cur: str) -> str:
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
    parts = [ch.div(fig, "segment-sizes")]
    grid = [[0] * 5 for _ in range(5)]
    for r in s["rf"]:
        grid[r["r_score"] - 1][r["f_score"] - 1] = r["count"]
    fig = go.Figure(go.Heatmap(z=grid, x=[f"F{i}" for i in range(1, 6)],
                               y=[f"R{i}" for i in range(1, 6)], colorscale="Blues",
                               text=grid, texttemplate="%{text}"))
    fig.update_layout(title="Customers by recency (R) and frequency (F) score")
    parts.append(ch.div(fig, "rf-heatmap"))
    tiers = sorted(s["tiers"], key=lambda r: TIER_ORDER.index(r["value_tier"])
                   if r["value_tier"] in TIER_ORDER else 99)
    fig = go.Figure([go.Bar(name="customers", x=[r["value_tier"] for r in tiers],
                            y=[r["customers"] for r in tiers])])
    fig.update_layout(title="Value tiers (from the M score)")
    parts.append(ch.div(fig, "value-tiers", height=320))
    rows = [{**r, "action": actions.get(r["segment"], "-")} for r in s["profile"]]
    parts.append("<h3>What characterises each segment, and what to do</h3>" + _html_table(rows, [
        ("segment", "segment", _num), ("customers", "customers", _num),
        ("share", "share_customers", _pct), ("share of revenue", "share_revenue", _pct),
        ("median days since last order", "median_recency_days", _num),
        ("median orders", "median_frequency", _num),
        ("median spend", "median_monetary", lambda v: _money(v, cur)),
        ("average order", "mean_order_value", lambda v: _money(v, cur)),
        ("main country", "main_country", _num),
        ("predicted spend per customer", "mean_predicted_spend", lambda v: _money(v, cur)),
        ("recommended action", "action", _num)],
        "segment-actions"))
    return "".join(parts)


def _clusters_html(c: dict, ch: _Charts, cur: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    parts = []
    if c.get("profiles"):
        parts.append(_html_table(c["profiles"], [
            ("cluster", "cluster", _num), ("name", "cluster_name", _num),
            ("customers", "customers", _num), ("share", "share_customers", _pct),
            ("share of revenue", "share_revenue", _pct),
            ("median recency (days)", "median_recency_days", _num),
            ("median orders", "median_frequency", _num),
            ("median spend", "median_monetary", lambda v: _money(v, cur)),
            ("mostly", "dominant_segment", _num)], "cluster-profiles"))
    if c.get("scatter"):
        fig = make_subplots(rows=1, cols=2, subplot_titles=(
            "log recency vs log spend", "log frequency vs log spend"))
        for cl in sorted({r["cluster"] for r in c["scatter"]}):
            pts = [r for r in c["scatter"] if r["cluster"] == cl]
            label = f"{cl}: {pts[0]['cluster_name']}"
            for col, x in ((1, "log_r"), (2, "log_f")):
                fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p["log_m"] for p in pts],
                                         mode="markers", marker={"size": 4, "opacity": 0.6},
                                         name=label, legendgroup=label, showlegend=col == 1,
                                         marker_color=_COLOURS[cl % len(_COLOURS)]),
                              row=1, col=col)
        fig.update_layout(title=f"Customers by cluster ({len(c['scatter']):,} of "
                                f"{c['scatter_of']:,}, a seeded sample)")
        parts.append(ch.div(fig, "cluster-scatter", height=420))
    if c.get("selection"):
        parts.append(_selection_html(c["selection"], c["selection_as_of"], ch))
    return "".join(parts)


def _selection_html(sel: list[dict], as_of: dt.date, ch: _Charts) -> str:
    """Why k was chosen: the criteria of every k tried, the verdicts, and their curves."""
    import plotly.graph_objects as go

    ks = [r["k"] for r in sel]
    chosen = next((r for r in sel if r["chosen"]), None)
    cost = "bic" if any(r.get("bic") is not None for r in sel) else "wcss"
    parts = []
    if chosen is not None and chosen.get("verdict"):
        parts.append(f'<p id="cluster-choice">k = {chosen["k"]} as of {as_of}: '
                     f'{html.escape(chosen["verdict"].removeprefix("chosen: "))}</p>')
    parts.append(_html_table(sel, [
        ("k", "k", _num), ("BIC" if cost == "bic" else "within-cluster sum of squares", cost,
                           lambda v: _num(v, 1)),
        ("silhouette", "silhouette", lambda v: _num(v, 3)),
        ("stability (ARI)", "stability", lambda v: _num(v, 2)),
        ("elbow", "elbow", lambda v: "yes" if v else ""),
        ("verdict", "verdict", _num)], "cluster-selection"))
    fig = go.Figure(go.Scatter(x=ks, y=[r[cost] for r in sel], mode="lines+markers"))
    for r in sel:
        if r["elbow"]:
            fig.add_vline(x=r["k"], line_dash="dash", annotation_text=f"elbow k={r['k']}")
    fig.update_layout(title=("BIC" if cost == "bic" else "Elbow: within-cluster sum of squares")
                      + f" ({as_of})", xaxis_title="k")
    parts.append(ch.div(fig, "cluster-elbow", height=320))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ks, y=[r["silhouette"] for r in sel], mode="lines+markers",
                             name="silhouette", line_color="#2ca02c"))
    fig.add_trace(go.Scatter(x=ks, y=[r.get("stability") for r in sel], mode="lines+markers",
                             name="stability (mean ARI of resamples)", line_color="#9467bd"))
    if chosen is not None:
        fig.add_vline(x=chosen["k"], line_dash="dash", annotation_text=f"chosen k={chosen['k']}")
    fig.update_layout(title="Silhouette and stability by k", xaxis_title="k")
    parts.append(ch.div(fig, "cluster-silhouette", height=320))
    return "".join(parts)


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def _band_label(i: int, cur: str) -> str:
    lo, hi = SPEND_BANDS[i], SPEND_BANDS[i + 1]
    if i == 0:
        return f"under {cur}1"
    return f"{cur}{lo:,.0f}+" if math.isinf(hi) else f"{cur}{lo:,.0f}-{hi:,.0f}"


def _backtest_html(v: dict) -> str:
    """Every backtested model's metrics with their intervals (the mean over the origins)."""
    origins = v.get("origins") or []
    span = (f"mean over {len(origins)} origins ({', '.join(map(str, origins))})"
            if len(origins) > 1 else f"at {v['backtest_as_of']}")
    rows = [{**r, **{f"{m}_shown": _with_interval(r, m) for m in (
        "normalised_gini", "spearman", "top_decile_share", "tier_macro_f1")},
        "ratio": (r["predicted_total"] / r["actual_total"]
                  if r.get("predicted_total") is not None and r.get("actual_total")
                  else None)} for r in v["backtest"]]
    return (f"<h3>Backtest, {html.escape(span)}, with 90% bootstrap intervals</h3>"
            + _html_table(rows, [
                ("model", "model", _num), ("role", "role", _num), ("serves", "served", _num),
                ("version", "model_version", _num),
                ("normalised Gini", "normalised_gini_shown", _num),
                ("Spearman", "spearman_shown", _num),
                ("top-decile share", "top_decile_share_shown", _num),
                ("tier macro-F1", "tier_macro_f1_shown", _num),
                ("predicted / actual spend", "ratio", lambda x: _num(x, 2)),
                ("inside the 80% interval", "interval_coverage", _pct)], "clv-backtest"))


def _value_html(v: dict, ch: _Charts, cur: str) -> str:
    import plotly.graph_objects as go

    parts = []
    if v.get("bands"):
        counts = {int(r["band"]): r["customers"] for r in v["bands"]}
        labels = [_band_label(i, cur) for i in range(len(SPEND_BANDS) - 1)]
        fig = go.Figure(go.Bar(x=labels, y=[counts.get(i, 0) for i in range(len(labels))]))
        fig.update_layout(title=f"Predicted spend over the next {v['horizon_days']} days "
                                f"(as of {v['as_of']}; total "
                                f"{_money(v['total_predicted'], cur)})",
                          yaxis_title="customers")
        parts.append(ch.div(fig, "spend-distribution"))
        tiers = sorted(v["tiers"], key=lambda r: TIER_ORDER.index(r["predicted_tier"])
                       if r["predicted_tier"] in TIER_ORDER else 99)
        fig = go.Figure(go.Bar(x=[r["predicted_tier"] for r in tiers],
                               y=[r["customers"] for r in tiers]))
        fig.update_layout(title="Predicted value tier", yaxis_title="customers")
        parts.append(ch.div(fig, "predicted-tiers", height=320))
    if v.get("deciles"):
        d = v["deciles"]
        x = [f"D{r['decile']}" for r in d]
        fig = go.Figure([go.Bar(name="mean predicted", x=x,
                                y=[r["mean_predicted"] for r in d]),
                         go.Bar(name="mean actual", x=x, y=[r["mean_actual"] for r in d])])
        fig.update_layout(title=f"Backtest at {v['backtest_as_of']} "
                                f"({v['backtest_horizon']} days): {v['deciles_model']} by "
                                "predicted decile (D1 = highest)", barmode="group")
        parts.append(ch.div(fig, "backtest-deciles"))
    if v.get("calibration"):
        parts.append(_calibration_html(v, ch))
    if v.get("backtest"):
        parts.append(_backtest_html(v))
    if "retain" in v:
        parts.append("<h3>Top customers to retain</h3>")
        parts.append(_html_table(v["retain"], [
            ("customer", "customer_id", lambda x: html.escape(str(x))),
            ("segment", "segment", _num), ("country", "country", _num),
            ("days since last order", "recency_days", _num), ("orders", "frequency", _num),
            ("spend to date", "monetary", lambda x: _money(x, cur)),
            ("predicted spend", "predicted_spend", lambda x: _money(x, cur)),
            ("tier", "predicted_tier", _num),
            ("P(alive)", "p_alive", lambda x: _num(x, 2))], "retain"))
    return "".join(parts)


def _with_interval(row: dict, metric: str) -> str:
    """A metric and its bootstrap interval, e.g. "0.712 (0.64 to 0.78)"; shares in percent."""
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None:
        return "-"
    pct = metric == "top_decile_share"
    shown = f"{value:.1%}" if pct else f"{value:.3f}"
    if low is None or high is None:
        return shown
    return f"{shown} ({low:.1%} to {high:.1%})" if pct else f"{shown} ({low:.2f} to {high:.2f})"


def _calibration_html(v: dict, ch: _Charts) -> str:
    import plotly.graph_objects as go

    parts = []
    for kind, chart_id, title, x_title in (
            ("by_repeat", "calibration-repeat", "Purchases in the horizon by repeat purchases "
             "before it (per customer)", "repeat purchases before (7 = 7 or more)"),
            ("cumulative", "calibration-cumulative", "Cumulative purchases over the horizon "
             "(all customers)", "days into the horizon")):
        rows = [r for r in v["calibration"] if r["kind"] == kind]
        if not rows:
            continue
        xs = [r["x"] for r in rows]
        fig = go.Figure([go.Scatter(x=xs, y=[r["actual"] for r in rows], name="actual",
                                    mode="lines+markers"),
                         go.Scatter(x=xs, y=[r["expected_bgnbd"] for r in rows],
                                    name="BG/NBD", mode="lines+markers"),
                         go.Scatter(x=xs, y=[r["expected_paretonbd"] for r in rows],
                                    name="Pareto/NBD", mode="lines+markers")])
        fig.update_layout(title=f"{title}: expected against actual, from "
                                f"{v['backtest_as_of']}", xaxis_title=x_title,
                          yaxis_title="purchase days")
        parts.append(ch.div(fig, chart_id, height=340))
    return "".join(parts)


def _changes_html(c: dict, ch: _Charts, cur: str) -> str:
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
    parts = [ch.div(fig, "segment-migration", height=520)]
    parts.append(_html_table(c["flags"], [
        ("check", "check", _num), ("kind", "kind", _num),
        ("value", "value", lambda x: _num(x, 3)),
        ("threshold", "threshold", lambda x: _num(x, 3)),
        ("flag", "breach", lambda b: '<span class="flag">DRIFT</span>' if b else "ok")],
        "drift-flags"))
    return "".join(parts)


def _audiences_html(a: dict) -> str:
    return (f"<p>As of {a['as_of']}; <code>custseg export --audience NAME</code> writes one "
            "as a file.</p>" + _html_table(a["rows"], [
                ("audience", "audience", _num), ("customers", "customers", _num),
                ("who", "who", _num), ("recommended action", "action", _num)], "audiences"))


def _quality_html(q: dict, ch: _Charts) -> str:
    import plotly.graph_objects as go

    parts = []
    if q.get("reasons"):
        r = q["reasons"]
        fig = go.Figure(go.Bar(x=[x["reason"] for x in r], y=[x["count"] for x in r]))
        fig.update_layout(title="Quarantined rows by reason", yaxis_title="rows")
        parts.append(ch.div(fig, "quarantine-reasons", height=320))
    if q.get("totals"):
        t = q["totals"]
        ok = t["bronze_rows"] == t["fact_rows"] + t["cancellation_rows"] + t["quarantine_rows"]
        verdict = "(reconciles)" if ok else "(DOES NOT RECONCILE)"
        parts.append(
            f'<p id="reconciliation" class="{"ok" if ok else "flag"}">'
            f'{q["batches"]:,} batch{"" if q["batches"] == 1 else "es"}: '
            f'{t["bronze_rows"]:,} bronze rows = '
            f'{t["fact_rows"]:,} fact + {t["cancellation_rows"]:,} cancellations + '
            f'{t["quarantine_rows"]:,} quarantine {verdict}'
            "</p>")
        parts.append(_html_table(q["recent"], [
            ("batch", "batch_id", lambda x: html.escape(str(x)[:16])),
            ("bronze", "bronze_rows", _num), ("fact", "fact_rows", _num),
            ("cancellations", "cancellation_rows", _num),
            ("quarantine", "quarantine_rows", _num),
            ("refined at", "refined_at", lambda x: html.escape(str(x)[:19]))], "batches"))
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;
color:#1d232b}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{padding:16px 32px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin:0 0 8px;font-size:18px}h3{font-size:15px;margin:16px 0 6px}
.kpis{display:flex;gap:16px;flex-wrap:wrap}
.kpi{background:#fff;border-radius:8px;padding:14px 20px;min-width:170px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
.kpi-value{display:block;font-size:26px;font-weight:600}.kpi-label{font-size:13px;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{border-bottom:1px solid #e3e5e8;padding:4px 8px;text-align:left}
th{background:#f0f2f5}.flag{color:#c1121f;font-weight:600}.ok{color:#2a7a2a}
.empty{color:#777;font-style:italic}
"""


def render(page: Page, cfg: Config) -> str:
    """The page as one HTML document with Plotly's JavaScript inline."""
    import plotly
    from plotly.offline import get_plotlyjs

    cur = cfg["dashboard"]["currency"]
    ch = _Charts()
    k = page.kpis
    shown = kpi_text(k, cur)
    labels = {"customers": "Customers", "revenue": "Revenue", "orders": "Orders",
              "average_order_value": "Average order value",
              "top20_share": "Revenue share of the top 20% of customers"}
    values = {"customers": k.customers, "revenue": k.revenue, "orders": k.orders,
              "average_order_value": k.average_order_value, "top20_share": k.top20_share}
    cards = "".join(
        f'<div class="kpi" data-kpi="{name}" data-value="{json.dumps(values[name])}">'
        f'<span class="kpi-value">{html.escape(shown[name])}</span>'
        f'<span class="kpi-label">{labels[name]}</span></div>' for name in labels)
    s = page.sections

    def section(sid: str, title: str, body: str, missing: str) -> str:
        inner = body or f'<p class="empty">{missing}</p>'
        return f'<section id="{sid}"><h2>{title}</h2>{inner}</section>'

    seg = s.get("segments")
    body = [
        f'<section id="kpis"><div class="kpis">{cards}</div></section>',
        section("sales", "Sales", _sales_html(s["sales"], ch, cur),
                "No gold report tables yet."),
        section("segments", "Segments",
                _segments_html(seg, cfg["dashboard"]["actions"], ch, cur) if seg else "",
                "No segments yet: run 'custseg segment'."),
        section("clusters", "Clusters",
                _clusters_html(s["clusters"], ch, cur) if s.get("clusters") else "",
                "No clusters yet: run 'custseg segment'."),
        section("value", "Customer value",
                _value_html(s["value"], ch, cur) if s.get("value") else "",
                "No value predictions yet: run 'custseg clv'."),
        section("changes", "Migration and drift",
                _changes_html(s["changes"], ch, cur) if s.get("changes") else "",
                "Only one as-of date so far; migration and drift need two."),
        section("audiences", "Audiences",
                _audiences_html(s["audiences"]) if s.get("audiences") else "",
                "No audiences yet: run 'custseg audiences'."),
        section("quality", "Data quality", _quality_html(s["quality"], ch),
                "No silver tables yet."),
    ]
    as_of = seg["as_of"] if seg else "-"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>custseg dashboard - as of {as_of}</title><style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<header><h1>Customer segments and value</h1><p>as of {as_of} &middot; "
        f"{html.escape(page.root)} &middot; generated {page.generated} &middot; "
        f"plotly {plotly.__version__}</p></header>"
        f'<main data-charts="{" ".join(ch.ids)}">{"".join(body)}</main></body></html>')
