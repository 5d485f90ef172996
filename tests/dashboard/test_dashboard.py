"""The dashboard in a real headless Chromium: it loads offline with no console errors, every
chart draws, and the KPIs shown equal figures computed here from the silver and gold tables."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from custseg.cli import main
from custseg.io import lakehouse

CHROMIUM = os.environ.get("CUSTSEG_CHROMIUM", "/usr/bin/chromium")
# As the machine's probe starts it: no sandbox as root, no GPU, no background network calls.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
EXPECTED_CHARTS = {
    "sales-trend", "sales-country", "sales-products", "purchase-nature", "segment-sizes",
    "rf-heatmap", "value-tiers", "cluster-scatter", "cluster-elbow", "cluster-silhouette",
    "spend-distribution", "predicted-tiers", "backtest-deciles", "calibration-repeat",
    "calibration-cumulative", "segment-migration",
    "quarantine-reasons",
}
FAST = ["cluster.k_max=4", "cluster.resamples=2", "spark.shuffle_partitions=2"]


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} ('make test' installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def built(notebook_run, tmp_path_factory):
    """The notebooks' lakehouse (every stage run) segmented at a second, earlier date, so the
    page has a migration section; then the dashboard through the CLI."""
    root = notebook_run["root"]
    sets = [s for item in FAST for s in ("--set", item)]
    assert main(["segment", "--as-of", "2011-09-01", "--lakehouse", root, *sets]) == 0
    assert main(["drift", "--lakehouse", root, *sets]) == 0
    out = tmp_path_factory.mktemp("dashboard") / "report.html"
    assert main(["dashboard", "--lakehouse", root, "--out", str(out), *sets]) == 0
    return {"root": root, "out": out}


@pytest.fixture(scope="module")
def browser_page(built):
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:"))
                else errors.append(f"network request to {r.url}"))
        page.goto(built["out"].as_uri(), wait_until="load")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.plotly-graph-div')]"
            ".every(d => d.querySelector('svg.main-svg'))", timeout=60_000)
        yield page, errors
        browser.close()


def _drawn(png: bytes) -> tuple[int, float]:
    """Distinct colours and the share of pixels that are not near-white.

    Pillow counts the colours (``getcolors``, in C): NumPy's row-wise ``unique`` took 31 s on
    the full-page screenshot alone."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = len(img.getcolors(maxcolors=1 << 24))  # every RGB colour fits
    ink = float((np.asarray(img, dtype=np.uint16).sum(axis=2) < 720).mean())
    return colours, ink


def test_page_loads_offline_without_errors(browser_page, built):
    page, errors = browser_page
    assert errors == []
    assert "custseg dashboard" in page.title()
    size = built["out"].stat().st_size
    assert size > 3_000_000  # plotly.js is inside the file
    assert "<script src=" not in built["out"].read_text(encoding="utf-8")


def test_every_chart_renders(browser_page, tmp_path):
    page, _ = browser_page
    ids = set(page.get_attribute("main", "data-charts").split())
    assert ids == EXPECTED_CHARTS
    for chart_id in sorted(ids):
        div = page.locator(f"#{chart_id}")
        assert div.evaluate("d => d.classList.contains('js-plotly-plot')"), chart_id
        # traces drawn: bars, lines, markers, heatmap image or sankey links
        marks = div.evaluate("d => d.querySelectorAll('.trace, .point, .sankey-link, "
                             "image, .bars path, .scatterlayer path').length")
        assert marks > 0, chart_id
        colours, ink = _drawn(div.screenshot())
        assert colours > 20 and ink > 0.01, (chart_id, colours, ink)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    colours, ink = _drawn(shot.read_bytes())
    assert colours > 200 and ink > 0.05
    keep = os.environ.get("CUSTSEG_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard.png")


def test_kpis_equal_the_tables(browser_page, built, spark):
    page, _ = browser_page
    root = built["root"]
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", "fct_invoices"))
    customers = lakehouse.read(
        spark, lakehouse.table_path(root, "gold", "report_customers")).toPandas()
    revenue = float(fact.agg({"total_price": "sum"}).first()[0])
    orders = fact.select("invoice_no").distinct().count()
    spend = customers["total_purchase"].to_numpy()
    cut = np.quantile(spend, 0.8, method="inverted_cdf")
    want = {
        "customers": (len(customers), f"{len(customers):,}"),
        "revenue": (revenue, f"£{revenue:,.0f}"),
        "orders": (orders, f"{orders:,}"),
        "average_order_value": (revenue / orders, f"£{revenue / orders:,.2f}"),
        "top20_share": (spend[spend > cut].sum() / spend.sum(),
                        f"{spend[spend > cut].sum() / spend.sum():.1%}"),
    }
    assert fact.where("customer_id is not null").select("customer_id").distinct().count() \
        == len(customers)
    for name, (value, text) in want.items():
        card = page.locator(f'[data-kpi="{name}"]')
        assert float(card.get_attribute("data-value")) == pytest.approx(value, rel=1e-9), name
        assert card.locator(".kpi-value").inner_text() == text, name


def test_tables_show_gold_figures(browser_page, built, spark):
    page, _ = browser_page
    root = built["root"]
    nature = {r["purchase_class"]: r["orders"] for r in lakehouse.read(
        spark, lakehouse.table_path(root, "gold", "purchase_nature")).collect()}
    rows = page.locator("#purchase-nature-table tbody tr")
    shown = {rows.nth(i).locator("td").nth(0).inner_text():
             rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())}
    assert shown == {k: f"{v:,}" for k, v in nature.items()}
    # the retention list holds only At Risk / Cannot Lose Them customers, best first
    retain = page.locator("#retain tbody tr")
    assert retain.count() > 0
    segments = {retain.nth(i).locator("td").nth(1).inner_text() for i in range(retain.count())}
    assert segments <= {"At Risk", "Cannot Lose Them"}
    spend = [float(retain.nth(i).locator("td").nth(6).inner_text().strip("£").replace(",", ""))
             for i in range(retain.count())]
    assert spend == sorted(spend, reverse=True)
    assert "reconciles" in page.locator("#reconciliation").inner_text()
    # the audiences the notebooks wrote, at the latest date, with their sizes
    members = lakehouse.read(spark, lakehouse.table_path(root, "gold", "audiences"))
    latest = members.agg({"as_of": "max"}).first()[0]
    sizes = {r["audience"]: r["count"] for r in
             members.where(members.as_of == latest).groupBy("audience").count().collect()}
    rows = page.locator("#audiences tbody tr")
    shown = {rows.nth(i).locator("td").nth(0).inner_text():
             rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert shown == {name: f"{sizes.get(name, 0):,}" for name in ("win_back", "reward",
                                                                  "nurture")}
    assert sum(sizes.values()) > 0
    actions = page.locator("#segment-actions").inner_text()
    assert "loyalty programme" in actions.lower() and "win-back" in actions.lower()


def test_the_cluster_choice_is_shown_with_every_criterion(browser_page, built, spark):
    page, _ = browser_page
    selection = lakehouse.read(spark, lakehouse.table_path(built["root"], "gold",
                                                           "cluster_selection"))
    latest = selection.agg({"as_of": "max"}).first()[0]
    rows = {r["k"]: r for r in selection.where(selection.as_of == latest).collect()}
    shown = page.locator("#cluster-selection tbody tr")
    cells = [[shown.nth(i).locator("td").nth(j).inner_text() for j in (0, 3, 5)]
             for i in range(shown.count())]
    assert cells == [[str(k), f"{rows[k]['stability']:.2f}", rows[k]["verdict"]]
                     for k in sorted(rows)]
    chosen = next(r for r in rows.values() if r["chosen"])
    assert page.locator("#cluster-choice").inner_text().startswith(f"k = {chosen['k']} as of")


def test_dashboard_is_the_last_stage_of_run():
    from custseg.cli import PIPELINE

    assert PIPELINE[-2:] == ("drift", "dashboard")


def test_the_page_is_written_again_only_when_a_setting_it_shows_changed(built, tmp_path,
                                                                         capsys):
    """A table's new version is the other cause, as for every step (tests/runtime/test_memo.py);
    the tables the page reads are ``collect.INPUTS``, and ``collect`` reads no other."""
    out = tmp_path / "page.html"
    sets = [s for item in FAST for s in ("--set", item)]
    args = ["dashboard", "--lakehouse", built["root"], "--out", str(out), *sets]

    def dashboard(*extra: str) -> str:
        assert main([*args, *extra]) == 0
        return capsys.readouterr().out

    assert f"wrote {out}" in dashboard()
    first, written = out.read_text(encoding="utf-8"), out.stat().st_mtime_ns
    # how Spark runs is not shown on the page
    said = dashboard("--set", "spark.shuffle_partitions=3")
    assert f"{out}: same inputs and settings as run" in said and "nothing written" in said
    assert out.stat().st_mtime_ns == written
    assert "€" not in first
    assert f"wrote {out}" in dashboard("--set", "dashboard.currency=€")
    assert "€" in out.read_text(encoding="utf-8")


def test_drift_flags_match_the_report_and_tag_the_champions(browser_page, built, spark):
    from mlflow import MlflowClient

    from custseg.config import load_config
    from custseg.io.catalog import SPEND_MODEL, TIER_MODEL
    from custseg.runtime import registry

    page, _ = browser_page
    report = lakehouse.read(spark, lakehouse.table_path(built["root"], "gold", "drift_report"))
    rows = {r["check"]: r for r in report.where("as_of = DATE'2011-12-10'").collect()}
    assert {r["from_as_of"].isoformat() for r in rows.values()} == {"2011-09-01"}
    table = page.locator("#drift-flags tbody tr")
    shown = {table.nth(i).locator("td").nth(0).inner_text():
             table.nth(i).locator("td").nth(4).inner_text() for i in range(table.count())}
    assert shown == {c: ("DRIFT" if r["breach"] else "ok") for c, r in rows.items()}
    model_drift = any(r["breach"] for r in rows.values()
                      if r["kind"] in ("rfm", "model_feature", "prediction"))
    registry.configure(built["root"], load_config())
    for name in (SPEND_MODEL, TIER_MODEL):
        version = registry.champion_version(name)
        tags = MlflowClient().get_model_version(name, version).tags
        assert tags["needs_retraining"] == ("true" if model_drift else "false")


HOSTILE = ('<img src=x onerror="window.__xss=1">',
           '</script><script>window.__xss=2</script>',
           '"><svg onload="window.__xss=3">')


def _hostile(value):
    """Every text from the data (countries, products, segments) replaced by a hostile one."""
    if isinstance(value, dict):
        return {k: (HOSTILE[len(k) % 3] if k in ("country", "main_country", "description",
                                                 "segment", "stock_code")
                    and isinstance(v, str) else _hostile(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile(v) for v in value]
    return value


def test_text_from_the_data_is_shown_as_text_and_never_runs(browser_page, built, spark,
                                                            tmp_path, monkeypatch):
    from pyspark import StorageLevel

    from custseg.config import load_config
    from custseg.dashboard import collect, render

    settings = load_config(overrides=FAST)
    kept = []
    frame = type(spark.range(1))  # the session's own DataFrame class
    persist = frame.persist
    monkeypatch.setattr(frame, "persist", lambda df, *a: kept.append(df) or persist(df, *a))
    page_data = collect.collect(spark, built["root"], settings)
    monkeypatch.undo()
    # what collect cached for its sections' repeated queries is released when it returns
    assert kept and all(df.storageLevel == StorageLevel.NONE for df in kept)
    page_data.sections = _hostile(page_data.sections)
    out = tmp_path / "hostile.html"
    out.write_text(render.render(page_data, settings), encoding="utf-8")
    errors: list[str] = []
    page = browser_page[0].context.browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
    page.goto(out.as_uri(), wait_until="load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')]"
        ".every(d => d.querySelector('svg.main-svg'))", timeout=60_000)
    ran = page.evaluate("() => window.__xss")
    injected = page.evaluate(
        "() => document.querySelectorAll('img[src=\"x\"], [onerror], [onload]').length"
        " + [...document.scripts].filter(s => s.text.trim() === 'window.__xss=2').length")
    table_text = page.locator("#country-activity").inner_text()
    charts = page.get_attribute("main", "data-charts").split()
    page.close()
    assert errors == []
    assert ran is None and injected == 0
    assert any(h in table_text for h in HOSTILE)  # shown as the text it is
    assert set(charts) == EXPECTED_CHARTS


def test_partial_months_are_named_by_hand():
    import datetime as dt

    from custseg.dashboard.collect import partial_months

    # UCI: 1 December 2010 08:26 to 9 December 2011 12:50
    assert partial_months(dt.datetime(2010, 12, 1, 8, 26), dt.datetime(2011, 12, 9, 12, 50)) \
        == {"2011-12": "to 9 Dec"}
    assert partial_months(dt.datetime(2011, 2, 3), dt.datetime(2011, 2, 28, 23)) \
        == {"2011-02": "from 3 Feb"}
    assert partial_months(dt.datetime(2012, 2, 3), dt.datetime(2012, 2, 28)) \
        == {"2012-02": "3-28 Feb"}  # 2012 is a leap year: the 28th is not the last day
    assert partial_months(dt.datetime(2011, 1, 1), dt.datetime(2011, 3, 31, 18)) == {}
