"""The dashboard stage: collect the figures, render the page, write it next to the lakehouse
(or to ``dashboard.out``)."""

from __future__ import annotations

import os
import time

from pyspark.sql import SparkSession

from custseg.config import Config
from custseg.dashboard.collect import collect
from custseg.dashboard.render import kpi_text, render
from custseg.io import lakehouse, storage
from custseg.runtime.summary import StageSummary


def default_out(root: str, cfg: Config) -> str:
    """``dashboard.out``, else ``<lakehouse>/dashboard/report.html``."""
    return cfg["dashboard"]["out"] or f"{lakehouse.normalise_root(root)}/dashboard/report.html"


def _write(spark: SparkSession, text: str, out: str) -> None:
    storage.File.at(out if lakehouse.is_uri(out) else os.path.abspath(out), spark).write(text)


def dashboard(spark: SparkSession, root: str, cfg: Config, out: str | None = None
              ) -> StageSummary:
    """Build the dashboard from the lakehouse and write it to ``out``."""
    start = time.time()
    summary = StageSummary("dashboard")
    page = collect(spark, root, cfg)
    text = render(page, cfg)
    target = out or default_out(root, cfg)
    _write(spark, text, target)
    summary.rows_in = page.kpis.customers
    charts = text.count('class="chart"')
    summary.notes.append(f"wrote {target} ({len(text) / 1e6:.1f} MB, {charts} charts)")
    shown = kpi_text(page.kpis, cfg["dashboard"]["currency"])
    summary.notes.append("KPIs: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if "changes" in page.sections:
        breaches = [f["check"] for f in page.sections["changes"]["flags"] if f["breach"]]
        summary.notes.append(f"drift flags: {', '.join(breaches) if breaches else 'none'}")
    summary.seconds = time.time() - start
    return summary
