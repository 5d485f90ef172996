"""The dashboard stage: collect the figures, render the page, write it next to the lakehouse
(or to ``dashboard.out``). The page is written again only when a table it reads or a setting
it shows changed, or when it is gone, like every other stage's output."""

from __future__ import annotations

import time

from pyspark.sql import SparkSession

from custseg.config import Config
from custseg.dashboard import collect
from custseg.dashboard.render import kpi_text, render
from custseg.io import lakehouse, storage
from custseg.runtime import memo
from custseg.runtime.summary import StageSummary

# where and how a run happens, not what the page shows
_NOT_SHOWN = ("spark", "delta", "input", "export", "mlflow")


def default_out(root: str, cfg: Config) -> str:
    """``dashboard.out``, else ``<lakehouse>/dashboard/report.html``."""
    return cfg["dashboard"]["out"] or f"{lakehouse.normalise_root(root)}/dashboard/report.html"


def dashboard(spark: SparkSession, root: str, cfg: Config, out: str | None = None
              ) -> StageSummary:
    """Build the dashboard from the lakehouse and write it to ``out``, unless the page there
    was built from the same table versions and settings."""
    start = time.time()
    summary = StageSummary("dashboard")
    target = lakehouse.normalise_root(out or default_out(root, cfg))  # absolute, or a URI

    def build(_key: str) -> None:
        page = collect.collect(spark, root, cfg)
        text = render(page, cfg)
        storage.File.at(target, spark).write(text)
        summary.rows_in = page.kpis.customers
        charts = text.count('class="chart"')
        summary.notes.append(f"wrote {target} ({len(text) / 1e6:.1f} MB, {charts} charts)")
        shown = kpi_text(page.kpis, cfg["dashboard"]["currency"])
        summary.notes.append("KPIs: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        if "changes" in page.sections:
            breaches = [f["check"] for f in page.sections["changes"]["flags"] if f["breach"]]
            summary.notes.append(f"drift flags: {', '.join(breaches) if breaches else 'none'}")

    step = memo.Step("dashboard", target, inputs=collect.INPUTS, outputs=(),
                     settings={k: v for k, v in cfg.items() if k not in _NOT_SHOWN},
                     files=(target,))
    done = memo.materialise(spark, root, step, build)
    if done:
        summary.notes.append(f"{target}: same inputs and settings as run {done}; "
                             "nothing written")
    summary.seconds = time.time() - start
    return summary
