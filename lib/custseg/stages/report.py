"""Gold: the reporting tables, rebuilt from silver whenever silver has changed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection

from pyspark.sql import DataFrame, SparkSession

from custseg.config import Config, load_config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.catalog import DIM_CUSTOMER, DIM_DATETIME, DIM_PRODUCT, FACT, RFM_SEGMENTS
from custseg.runtime.summary import StageSummary
from custseg.transforms.reports import (
    country_activity,
    invoice_totals,
    purchase_nature,
    report_country_customers,
    report_customers,
    report_product_invoices,
    report_sales,
    report_transactions,
    report_year_invoices,
)

RFM_PATH = ("gold", RFM_SEGMENTS)


def _inputs(spark: SparkSession, root: str) -> dict[str, str]:
    silver = {name: lakehouse.table_path(root, "silver", name)
              for name in (FACT, DIM_CUSTOMER, DIM_PRODUCT, DIM_DATETIME)}
    for path in silver.values():
        if not lakehouse.exists(spark, path):
            raise InputError(f"{path}: no silver table; run 'custseg refine' first")
    rfm = lakehouse.table_path(root, *RFM_PATH)
    if lakehouse.exists(spark, rfm):
        silver[RFM_SEGMENTS] = rfm
    return silver


def _reports(spark: SparkSession, paths: dict[str, str], cfg: Config, totals: DataFrame
             ) -> dict[str, tuple[list[str], Callable]]:
    t = {name: lakehouse.read(spark, path) for name, path in paths.items()}
    rep = cfg["report"]
    nature = rep["purchase_nature"]
    fact, products = t[FACT], t[DIM_PRODUCT]
    customer_inputs = [FACT, DIM_CUSTOMER] + ([RFM_SEGMENTS] if RFM_SEGMENTS in t else [])
    return {
        "report_customers": (customer_inputs, lambda: report_customers(
            totals, t[DIM_CUSTOMER], t.get(RFM_SEGMENTS))),
        "report_sales": ([FACT, DIM_PRODUCT, DIM_DATETIME],
                         lambda: report_sales(fact, products, t[DIM_DATETIME])),
        "report_transactions": ([FACT], lambda: report_transactions(totals)),
        "report_country_customers": ([FACT], lambda: report_country_customers(totals)),
        "report_product_invoices": ([FACT, DIM_PRODUCT],
                                    lambda: report_product_invoices(fact, products)),
        "report_year_invoices": ([FACT], lambda: report_year_invoices(totals)),
        "purchase_nature": ([FACT, _setting("purchase_nature", nature)], lambda: purchase_nature(
            totals, nature["bulk_min_items"], nature["reseller_min_items"])),
        "country_activity": ([FACT, _setting("growth_months", rep["growth_months"])],
                             lambda: country_activity(totals, rep["growth_months"])),
    }


def _setting(name: str, value: object) -> str:
    """A settings 'input': a report built with other settings is rebuilt like one whose
    inputs changed."""
    return f"setting:{name}={json.dumps(value, sort_keys=True)}"


def _build(spark: SparkSession, root: str, name: str, inputs: list[str], build: Callable,
           paths: dict[str, str]) -> bool:
    """Rebuild one report unless the versions of its inputs are those it was built from."""
    versions = {i: (True if i.startswith("setting:") else lakehouse.version(spark, paths[i]))
                for i in inputs}
    path = lakehouse.table_path(root, "gold", name)
    if lakehouse.last_metadata(spark, path).get("input_versions") == versions:
        return False
    lakehouse.overwrite(build(), path, {"input_versions": versions})
    return True


def refresh_customer_report(spark: SparkSession, root: str) -> int:
    """Rebuild gold/report_customers (after segmenting) and return its row count."""
    paths = _inputs(spark, root)
    totals = invoice_totals(lakehouse.read(spark, paths[FACT]))
    inputs, build = _reports(spark, paths, load_config(), totals)["report_customers"]
    _build(spark, root, "report_customers", inputs, build, paths)
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", "report_customers")).count()


def report(spark: SparkSession, root: str, cfg: Config | None = None,
           deferred: Collection[str] = ()) -> StageSummary:
    """Rebuild each gold report whose inputs (or settings) changed since it was last written.

    ``deferred`` names reports a later stage of the same run rebuilds anyway (``custseg run``
    leaves report_customers to segment, which adds the new RFM segments to it).
    """
    start = time.time()
    summary = StageSummary("report")
    paths = _inputs(spark, root)
    summary.rows_in = lakehouse.read(spark, paths[FACT]).count()
    # Read by six reports: cached on first use (not at all when none is rebuilt).
    totals = invoice_totals(lakehouse.read(spark, paths[FACT])).persist()
    reports = {name: r for name, r in _reports(spark, paths, cfg or load_config(), totals).items()
               if name not in deferred}
    for name in deferred:
        summary.notes.append(f"gold/{name}: left to a later stage of this run")
    unchanged = 0
    try:
        for name, (inputs, build) in reports.items():
            if not _build(spark, root, name, inputs, build, paths):
                unchanged += 1
            summary.rows_out[f"gold/{name}"] = lakehouse.read(
                spark, lakehouse.table_path(root, "gold", name)).count()
    finally:
        totals.unpersist()
    if unchanged == len(reports):
        summary.notes.append("inputs unchanged since the last report; gold left as it was")
    summary.seconds = time.time() - start
    return summary
