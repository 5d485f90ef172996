"""The dashboard page: plain data from ``collect`` rendered as one self-contained HTML file.

The HTML is in Jinja2 templates (``templates/``, autoescaped, so text from the data is shown as
text), the style sheet in ``static/dashboard.css``; both, and Plotly's JavaScript, are embedded
at render time so the file opens offline. Python here only picks the figures and formats the
cells.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from custseg.config import Config
from custseg.dashboard import charts
from custseg.dashboard.charts import money, pct
from custseg.dashboard.collect import Kpis, Page

Cell = Callable[[Any], Any]
KPI_LABELS = {"customers": "Customers", "revenue": "Revenue", "orders": "Orders",
              "average_order_value": "Average order value",
              "top20_share": "Revenue share of the top 20% of customers"}


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("custseg.dashboard", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def kpi_text(kpis: Kpis, cur: str) -> dict[str, str]:
    """The KPI values as the page prints them."""
    return {"customers": f"{kpis.customers:,}", "revenue": money(kpis.revenue, cur),
            "orders": f"{kpis.orders:,}",
            "average_order_value": f"{cur}{kpis.average_order_value:,.2f}",
            "top20_share": pct(kpis.top20_share)}


@dataclass(frozen=True)
class Table:
    """A table as the ``table`` macro draws it: cells already formatted as text."""

    id: str
    head: list[str]
    rows: list[list[Any]]


def table(rows: list[dict], columns: list[tuple[str, str, Cell]], table_id: str) -> Table:
    """``rows`` under ``columns`` (label, key, formatter)."""
    return Table(table_id, [label for label, _, _ in columns],
                 [[fmt(r.get(key)) for _, key, fmt in columns] for r in rows])


class _Charts:
    """Plotly figures turned into divs; the page script is added once by ``render``."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def div(self, fig: Any, chart_id: str, height: int = 380) -> Markup:
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                          template="plotly_white")
        self.ids.append(chart_id)
        return Markup(_env().get_template("chart.html.j2").render(
            id=chart_id, figure=Markup(fig.to_html(
                full_html=False, include_plotlyjs=False, div_id=chart_id,
                default_height=f"{height}px",
                config={"displaylogo": False, "responsive": True}))))


def _sales(s: dict, ch: _Charts, cur: str) -> dict:
    out: dict[str, Any] = {}
    if s.get("months"):
        out["trend"] = ch.div(charts.sales_trend(s, cur), "sales-trend")
    if s.get("countries"):
        c = s["countries"]
        out["country"] = ch.div(charts.sales_country(c), "sales-country")
        out["country_table"] = table(c, [
            ("country", "country", _num), ("customers", "customers", _num),
            ("orders", "orders", _num), ("revenue", "revenue", lambda v: money(v, cur)),
            ("revenue per customer", "revenue_per_customer", lambda v: money(v, cur)),
            (f"revenue growth (last {c[0]['growth_months']} months)", "revenue_growth", pct),
            ("customer growth", "customer_growth", pct)], "country-activity")
    if s.get("products"):
        out["products"] = ch.div(charts.sales_products(s["products"]), "sales-products",
                                 height=420)
    if s.get("nature"):
        n = s["nature"]
        out["nature"] = ch.div(charts.purchase_nature(n), "purchase-nature")
        out["nature_table"] = table(n, [
            ("class", "purchase_class", _num), ("from units", "min_items", _num),
            ("to units", "max_items", _num), ("orders", "orders", _num),
            ("customers", "customers", _num), ("revenue", "revenue", lambda v: money(v, cur)),
            ("average order", "average_order_value", lambda v: money(v, cur))],
            "purchase-nature-table")
    return out


def _segments(s: dict, actions: dict[str, str], ch: _Charts, cur: str) -> dict:
    rows = [{**r, "action": actions.get(r["segment"], "-")} for r in s["profile"]]
    return {
        "sizes": ch.div(charts.segment_sizes(s), "segment-sizes"),
        "heatmap": ch.div(charts.rf_heatmap(s["rf"]), "rf-heatmap"),
        "tiers": ch.div(charts.value_tiers(s["tiers"]), "value-tiers", height=320),
        "actions": table(rows, [
            ("segment", "segment", _num), ("customers", "customers", _num),
            ("share", "share_customers", pct), ("share of revenue", "share_revenue", pct),
            ("median days since last order", "median_recency_days", _num),
            ("median orders", "median_frequency", _num),
            ("median spend", "median_monetary", lambda v: money(v, cur)),
            ("average order", "mean_order_value", lambda v: money(v, cur)),
            ("main country", "main_country", _num),
            ("predicted spend per customer", "mean_predicted_spend", lambda v: money(v, cur)),
            ("recommended action", "action", _num)], "segment-actions")}


def _clusters(c: dict, ch: _Charts, cur: str) -> dict:
    out: dict[str, Any] = {}
    if c.get("profiles"):
        out["profiles"] = table(c["profiles"], [
            ("cluster", "cluster", _num), ("name", "cluster_name", _num),
            ("customers", "customers", _num), ("share", "share_customers", pct),
            ("share of revenue", "share_revenue", pct),
            ("median recency (days)", "median_recency_days", _num),
            ("median orders", "median_frequency", _num),
            ("median spend", "median_monetary", lambda v: money(v, cur)),
            ("mostly", "dominant_segment", _num)], "cluster-profiles")
    if c.get("scatter"):
        out["scatter"] = ch.div(charts.cluster_scatter(c), "cluster-scatter", height=420)
    if c.get("selection"):
        out["selection"] = _selection(c["selection"], c["selection_as_of"], ch)
    return out


def _selection(sel: list[dict], as_of: Any, ch: _Charts) -> dict:
    """Why k was chosen: the criteria of every k tried, the verdicts, and their curves."""
    chosen = next((r for r in sel if r["chosen"]), None)
    cost = "bic" if any(r.get("bic") is not None for r in sel) else "wcss"
    return {
        "chosen": chosen if chosen is not None and chosen.get("verdict") else None,
        "as_of": as_of,
        "table": table(sel, [
            ("k", "k", _num), ("BIC" if cost == "bic" else "within-cluster sum of squares",
                               cost, lambda v: _num(v, 1)),
            ("silhouette", "silhouette", lambda v: _num(v, 3)),
            ("stability (ARI)", "stability", lambda v: _num(v, 2)),
            ("elbow", "elbow", lambda v: "yes" if v else ""),
            ("verdict", "verdict", _num)], "cluster-selection"),
        "cost": ch.div(charts.selection_cost(sel, cost, as_of), "cluster-elbow", height=320),
        "quality": ch.div(charts.selection_quality(sel, chosen), "cluster-silhouette",
                          height=320)}


def with_interval(row: dict, metric: str) -> str:
    """A metric and its bootstrap interval, e.g. "0.712 (0.64 to 0.78)"; shares in percent."""
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None:
        return "-"
    pct_metric = metric == "top_decile_share"
    shown = f"{value:.1%}" if pct_metric else f"{value:.3f}"
    if low is None or high is None:
        return shown
    return (f"{shown} ({low:.1%} to {high:.1%})" if pct_metric
            else f"{shown} ({low:.2f} to {high:.2f})")


def _backtest(v: dict) -> dict:
    """Every backtested model's metrics with their intervals (the mean over the origins)."""
    origins = v.get("origins") or []
    span = (f"mean over {len(origins)} origins ({', '.join(map(str, origins))})"
            if len(origins) > 1 else f"at {v['backtest_as_of']}")
    rows = [{**r, **{f"{m}_shown": with_interval(r, m) for m in (
        "normalised_gini", "spearman", "top_decile_share", "tier_macro_f1")},
        "ratio": (r["predicted_total"] / r["actual_total"]
                  if r.get("predicted_total") is not None and r.get("actual_total")
                  else None)} for r in v["backtest"]]
    return {"span": span, "table": table(rows, [
        ("model", "model", _num), ("role", "role", _num), ("serves", "served", _num),
        ("version", "model_version", _num),
        ("normalised Gini", "normalised_gini_shown", _num),
        ("Spearman", "spearman_shown", _num),
        ("top-decile share", "top_decile_share_shown", _num),
        ("tier macro-F1", "tier_macro_f1_shown", _num),
        ("predicted / actual spend", "ratio", lambda x: _num(x, 2)),
        ("inside the 80% interval", "interval_coverage", pct)], "clv-backtest")}


def _value(v: dict, ch: _Charts, cur: str) -> dict:
    out: dict[str, Any] = {}
    if v.get("bands"):
        out["bands"] = ch.div(charts.spend_distribution(v, cur), "spend-distribution")
        out["tiers"] = ch.div(charts.predicted_tiers(v["tiers"]), "predicted-tiers",
                              height=320)
    if v.get("deciles"):
        out["deciles"] = ch.div(charts.backtest_deciles(v), "backtest-deciles")
    out["calibration"] = [
        ch.div(charts.calibration(rows, title, x_title, v["backtest_as_of"]), chart_id,
               height=340)
        for kind, chart_id, title, x_title in charts.CALIBRATION
        if (rows := [r for r in v.get("calibration") or [] if r["kind"] == kind])]
    if v.get("backtest"):
        out["backtest"] = _backtest(v)
    if "retain" in v:
        out["retain"] = table(v["retain"], [
            ("customer", "customer_id", str),
            ("segment", "segment", _num), ("country", "country", _num),
            ("days since last order", "recency_days", _num), ("orders", "frequency", _num),
            ("spend to date", "monetary", lambda x: money(x, cur)),
            ("predicted spend", "predicted_spend", lambda x: money(x, cur)),
            ("tier", "predicted_tier", _num),
            ("P(alive)", "p_alive", lambda x: _num(x, 2))], "retain")
    return out


def _changes(c: dict, ch: _Charts) -> dict:
    flag = Markup('<span class="flag">DRIFT</span>')
    return {"migration": ch.div(charts.segment_migration(c), "segment-migration", height=520),
            "flags": table(c["flags"], [
                ("check", "check", _num), ("kind", "kind", _num),
                ("value", "value", lambda x: _num(x, 3)),
                ("threshold", "threshold", lambda x: _num(x, 3)),
                ("flag", "breach", lambda b: flag if b else "ok")], "drift-flags")}


def _audiences(a: dict) -> dict:
    return {"as_of": a["as_of"], "listing": table(a["rows"], [
        ("audience", "audience", _num), ("customers", "customers", _num),
        ("who", "who", _num), ("recommended action", "action", _num)], "audiences")}


def _quality(q: dict, ch: _Charts) -> dict:
    out: dict[str, Any] = {}
    if q.get("reasons"):
        out["reasons"] = ch.div(charts.quarantine_reasons(q["reasons"]), "quarantine-reasons",
                                height=320)
    if q.get("totals"):
        t = q["totals"]
        out["totals"] = t
        out["batches"] = q["batches"]
        out["reconciles"] = t["bronze_rows"] == (t["fact_rows"] + t["cancellation_rows"]
                                                 + t["quarantine_rows"])
        out["recent"] = table(q["recent"], [
            ("batch", "batch_id", lambda x: str(x)[:16]),
            ("bronze", "bronze_rows", _num), ("fact", "fact_rows", _num),
            ("cancellations", "cancellation_rows", _num),
            ("quarantine", "quarantine_rows", _num),
            ("refined at", "refined_at", lambda x: str(x)[:19])], "batches")
    return out


def _sections(s: dict, cfg: Config, ch: _Charts) -> list[dict]:
    """Each section's id, title, template context (None when its tables are missing) and the
    text shown instead."""
    cur = cfg["dashboard"]["currency"]
    seg, clusters, value = s.get("segments"), s.get("clusters"), s.get("value")
    changes, audiences = s.get("changes"), s.get("audiences")
    return [
        {"id": "sales", "title": "Sales", "context": _sales(s["sales"], ch, cur),
         "missing": "No gold report tables yet."},
        {"id": "segments", "title": "Segments",
         "context": _segments(seg, cfg["dashboard"]["actions"], ch, cur) if seg else None,
         "missing": "No segments yet: run 'custseg segment'."},
        {"id": "clusters", "title": "Clusters",
         "context": _clusters(clusters, ch, cur) if clusters else None,
         "missing": "No clusters yet: run 'custseg segment'."},
        {"id": "value", "title": "Customer value",
         "context": _value(value, ch, cur) if value else None,
         "missing": "No value predictions yet: run 'custseg clv'."},
        {"id": "changes", "title": "Migration and drift",
         "context": _changes(changes, ch) if changes else None,
         "missing": "Only one as-of date so far; migration and drift need two."},
        {"id": "audiences", "title": "Audiences",
         "context": _audiences(audiences) if audiences else None,
         "missing": "No audiences yet: run 'custseg audiences'."},
        {"id": "quality", "title": "Data quality", "context": _quality(s["quality"], ch),
         "missing": "No silver tables yet."}]


def render(page: Page, cfg: Config) -> str:
    """The page as one HTML document with its style sheet and Plotly's JavaScript inline."""
    import plotly
    from plotly.offline import get_plotlyjs

    ch = _Charts()
    k = page.kpis
    values = {"customers": k.customers, "revenue": k.revenue, "orders": k.orders,
              "average_order_value": k.average_order_value, "top20_share": k.top20_share}
    shown = kpi_text(k, cfg["dashboard"]["currency"])
    kpis = [{"name": n, "label": label, "value": json.dumps(values[n]), "shown": shown[n]}
            for n, label in KPI_LABELS.items()]
    sections = _sections(page.sections, cfg, ch)
    env = _env()
    for s in sections:
        body = (env.get_template(f"{s['id']}.html.j2").render(**s["context"])
                if s["context"] is not None else "")
        s["body"] = Markup(body.strip())
    seg = page.sections.get("segments")
    css = resources.files("custseg.dashboard").joinpath("static/dashboard.css").read_text(
        encoding="utf-8")
    return env.get_template("page.html.j2").render(
        as_of=seg["as_of"] if seg else "-", root=page.root, generated=page.generated,
        plotly_version=plotly.__version__, css=Markup(css), plotly_js=Markup(get_plotlyjs()),
        kpis=kpis, sections=sections, chart_ids=" ".join(ch.ids))
