"""Gold: the reporting tables, each rebuilt when its inputs (catalog.REPORT_INPUTS) or its
settings change."""

from __future__ import annotations

import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession

from custseg.config import Config, load_config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.catalog import (
    DIM_CUSTOMER,
    DIM_DATETIME,
    DIM_PRODUCT,
    FACT,
    REPORT_INPUTS,
    RFM_SEGMENTS,
)
from custseg.runtime import memo
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


def _inputs(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    """The silver tables (all required) and the RFM segments when there are any."""
    tables = {}
    for name in (FACT, DIM_CUSTOMER, DIM_PRODUCT, DIM_DATETIME):
        path = lakehouse.table_path(root, "silver", name)
        if not lakehouse.exists(spark, path):
            raise InputError(f"{path}: no silver table; run 'custseg refine' first")
        tables[name] = lakehouse.read(spark, path)
    rfm = lakehouse.table_path(root, *RFM_PATH)
    if lakehouse.exists(spark, rfm):
        tables[RFM_SEGMENTS] = lakehouse.read(spark, rfm)
    return tables


def _reports(t: dict[str, DataFrame], cfg: Config, totals: DataFrame
             ) -> dict[str, tuple[dict[str, object], Callable[[], DataFrame]]]:
    """Each report's settings and how to build it (its inputs are in the catalog)."""
    rep = cfg["report"]
    nature = rep["purchase_nature"]
    fact, products = t[FACT], t[DIM_PRODUCT]
    return {
        "report_customers": ({}, lambda: report_customers(
            totals, t[DIM_CUSTOMER], t.get(RFM_SEGMENTS))),
        "report_sales": ({}, lambda: report_sales(fact, products, t[DIM_DATETIME])),
        "report_transactions": ({}, lambda: report_transactions(totals)),
        "report_country_customers": ({}, lambda: report_country_customers(totals)),
        "report_product_invoices": ({}, lambda: report_product_invoices(fact, products)),
        "report_year_invoices": ({}, lambda: report_year_invoices(totals)),
        "purchase_nature": ({"purchase_nature": nature}, lambda: purchase_nature(
            totals, nature["bulk_min_items"], nature["reseller_min_items"])),
        "country_activity": ({"growth_months": rep["growth_months"]},
                             lambda: country_activity(totals, rep["growth_months"])),
    }


def _replace(spark: SparkSession, root: str,
             reports: dict[str, tuple[dict[str, object], Callable[[], DataFrame]]]
             ) -> dict[str, str | None]:
    """Rebuild each report whose inputs (catalog.REPORT_INPUTS) or settings changed."""
    return memo.replace_tables(spark, root, "report", "gold", {
        name: (REPORT_INPUTS[name], settings, make) for name, (settings, make) in reports.items()})


def refresh_customer_report(spark: SparkSession, root: str) -> int | None:
    """Rebuild gold/report_customers when its inputs changed (after segmenting); its row count
    then, None when it was up to date."""
    t = _inputs(spark, root)
    reports = _reports(t, load_config(), invoice_totals(t[FACT]))
    done = _replace(spark, root, {"report_customers": reports["report_customers"]})
    if done["report_customers"] is not None:
        return None
    return lakehouse.row_counts(spark, [lakehouse.table_path(root, "gold", "report_customers")])[0]


def report(spark: SparkSession, root: str, cfg: Config | None = None) -> StageSummary:
    """Rebuild each gold report whose inputs (or settings) changed since it was last built.

    Run after segment, so report_customers already carries this run's segments and is left
    as segment built it.
    """
    start = time.time()
    summary = StageSummary("report")
    t = _inputs(spark, root)
    summary.rows_in = t[FACT].count()
    # Read by six reports: cached on first use (not at all when none is rebuilt).
    totals = invoice_totals(t[FACT]).persist()
    try:
        done = _replace(spark, root, _reports(t, cfg or load_config(), totals))
    finally:
        totals.unpersist()
    built = [name for name, by in done.items() if by is None]
    counts = lakehouse.row_counts(spark, [lakehouse.table_path(root, "gold", n) for n in built])
    summary.rows_out.update({f"gold/{n}": c for n, c in zip(built, counts, strict=True)})
    if all(done.values()):
        summary.notes.append("inputs unchanged since the last report; gold left as it was")
    else:
        summary.notes += [f"gold/{name}: up to date (built by run {by}); left as it was"
                          for name, by in done.items() if by]
    summary.seconds = time.time() - start
    return summary
