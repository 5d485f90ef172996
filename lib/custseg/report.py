"""Gold: the reporting tables, rebuilt from silver whenever silver has changed."""

from __future__ import annotations

import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg import lakehouse
from custseg.errors import InputError
from custseg.refine import DIM_CUSTOMER, DIM_DATETIME, DIM_PRODUCT, FACT
from custseg.summary import StageSummary


def latest_segments(rfm: DataFrame) -> DataFrame:
    """Each customer's score, segment and tier at the latest as-of date in ``rfm``."""
    latest = rfm.agg(F.max("as_of").alias("as_of"))
    return rfm.join(F.broadcast(latest), "as_of").select(
        "customer_id", F.col("as_of").alias("segment_as_of"), "rfm_score", "segment",
        "value_tier")


def report_customers(
    fact: DataFrame, customers: DataFrame, rfm: DataFrame | None = None
) -> DataFrame:
    """Per identified customer: country, orders, items, total purchase, first and last purchase,
    and (once segmented) the latest RFM score, segment and value tier."""
    agg = (fact.where(F.col("customer_id").isNotNull()).groupBy("customer_id").agg(
        F.countDistinct("invoice_no").alias("orders"),
        F.sum("quantity").cast("long").alias("items"),
        F.sum("total_price").alias("total_purchase"),
        F.min("invoice_date").alias("first_purchase"),
        F.max("invoice_date").alias("last_purchase"),
    ))
    out = agg.join(customers.select("customer_id", "country"), "customer_id", "left").select(
        "customer_id", "country", "orders", "items", "total_purchase",
        "first_purchase", "last_purchase")
    if rfm is None:
        return out
    return out.join(latest_segments(rfm), "customer_id", "left")


def report_sales(fact: DataFrame, products: DataFrame, datetimes: DataFrame) -> DataFrame:
    """Line level with product and calendar attributes, for slicing in BI tools."""
    return (fact
            .join(products.select("stock_code", F.col("description").alias("product"),
                                  "is_non_product"), "stock_code", "left")
            .join(datetimes.select("datetime_key", "date", "year", "quarter", "month",
                                   "day_of_week", "hour"), "datetime_key", "left")
            .select("invoice_no", "invoice_date", "date", "year", "quarter", "month",
                    "day_of_week", "hour", "customer_id", "country", "stock_code", "product",
                    "is_non_product", "quantity", "unit_price", "total_price"))


def report_transactions(fact: DataFrame) -> DataFrame:
    """Per invoice: date, customer, country, lines, items and sales."""
    return fact.groupBy("invoice_no").agg(
        F.min("invoice_date").alias("invoice_date"),
        F.first("customer_id", ignorenulls=True).alias("customer_id"),
        F.first("country", ignorenulls=True).alias("country"),
        F.count("*").alias("lines"),
        F.sum("quantity").cast("long").alias("items"),
        F.sum("total_price").alias("sales"),
    )


def report_country_customers(fact: DataFrame) -> DataFrame:
    """Per country: identified customers, invoices and revenue (anonymous lines included)."""
    return fact.groupBy("country").agg(
        F.countDistinct("customer_id").alias("customers"),
        F.countDistinct("invoice_no").alias("invoices"),
        F.sum("total_price").alias("revenue"),
    )


def report_product_invoices(fact: DataFrame, products: DataFrame) -> DataFrame:
    """Per product: invoices, units and revenue."""
    agg = fact.groupBy("stock_code").agg(
        F.countDistinct("invoice_no").alias("invoices"),
        F.sum("quantity").cast("long").alias("quantity"),
        F.sum("total_price").alias("revenue"),
    )
    return agg.join(products, "stock_code", "left").select(
        "stock_code", "description", "is_non_product", "invoices", "quantity", "revenue")


def report_year_invoices(fact: DataFrame) -> DataFrame:
    """Per year and month: invoices and revenue."""
    return (fact.groupBy(F.year("invoice_date").alias("year"),
                         F.month("invoice_date").alias("month"))
            .agg(F.countDistinct("invoice_no").alias("invoices"),
                 F.sum("total_price").alias("revenue")))


RFM_PATH = ("gold", "rfm_segments")


def _inputs(spark: SparkSession, root: str) -> dict[str, str]:
    silver = {name: lakehouse.table_path(root, "silver", name)
              for name in (FACT, DIM_CUSTOMER, DIM_PRODUCT, DIM_DATETIME)}
    for path in silver.values():
        if not lakehouse.exists(spark, path):
            raise InputError(f"{path}: no silver table; run 'custseg refine' first")
    rfm = lakehouse.table_path(root, *RFM_PATH)
    if lakehouse.exists(spark, rfm):
        silver["rfm_segments"] = rfm
    return silver


def _reports(spark: SparkSession, paths: dict[str, str]) -> dict[str, tuple[list[str], Callable]]:
    t = {name: lakehouse.read(spark, path) for name, path in paths.items()}
    fact, products = t[FACT], t[DIM_PRODUCT]
    customer_inputs = [FACT, DIM_CUSTOMER] + (["rfm_segments"] if "rfm_segments" in t else [])
    return {
        "report_customers": (customer_inputs, lambda: report_customers(
            fact, t[DIM_CUSTOMER], t.get("rfm_segments"))),
        "report_sales": ([FACT, DIM_PRODUCT, DIM_DATETIME],
                         lambda: report_sales(fact, products, t[DIM_DATETIME])),
        "report_transactions": ([FACT], lambda: report_transactions(fact)),
        "report_country_customers": ([FACT], lambda: report_country_customers(fact)),
        "report_product_invoices": ([FACT, DIM_PRODUCT],
                                    lambda: report_product_invoices(fact, products)),
        "report_year_invoices": ([FACT], lambda: report_year_invoices(fact)),
    }


def _build(spark: SparkSession, root: str, name: str, inputs: list[str], build: Callable,
           paths: dict[str, str]) -> bool:
    """Rebuild one report unless the versions of its inputs are those it was built from."""
    versions = {i: lakehouse.version(spark, paths[i]) for i in inputs}
    path = lakehouse.table_path(root, "gold", name)
    if lakehouse.last_metadata(spark, path).get("input_versions") == versions:
        return False
    lakehouse.overwrite(build(), path, {"input_versions": versions})
    return True


def refresh_customer_report(spark: SparkSession, root: str) -> int:
    """Rebuild gold/report_customers (after segmenting) and return its row count."""
    paths = _inputs(spark, root)
    inputs, build = _reports(spark, paths)["report_customers"]
    _build(spark, root, "report_customers", inputs, build, paths)
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", "report_customers")).count()


def report(spark: SparkSession, root: str) -> StageSummary:
    """Rebuild each gold report whose inputs changed since it was last written."""
    start = time.time()
    summary = StageSummary("report")
    paths = _inputs(spark, root)
    summary.rows_in = lakehouse.read(spark, paths[FACT]).count()
    reports = _reports(spark, paths)
    unchanged = 0
    for name, (inputs, build) in reports.items():
        if not _build(spark, root, name, inputs, build, paths):
            unchanged += 1
        summary.rows_out[f"gold/{name}"] = lakehouse.read(
            spark, lakehouse.table_path(root, "gold", name)).count()
    if unchanged == len(reports):
        summary.notes.append("inputs unchanged since the last report; gold left as it was")
    summary.seconds = time.time() - start
    return summary
