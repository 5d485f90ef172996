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


def report_customers(fact: DataFrame, customers: DataFrame) -> DataFrame:
    """Per identified customer: country, orders, items, total purchase, first and last purchase."""
    agg = (fact.where(F.col("customer_id").isNotNull()).groupBy("customer_id").agg(
        F.countDistinct("invoice_no").alias("orders"),
        F.sum("quantity").cast("long").alias("items"),
        F.sum("total_price").alias("total_purchase"),
        F.min("invoice_date").alias("first_purchase"),
        F.max("invoice_date").alias("last_purchase"),
    ))
    return agg.join(customers.select("customer_id", "country"), "customer_id", "left").select(
        "customer_id", "country", "orders", "items", "total_purchase",
        "first_purchase", "last_purchase")


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


def report(spark: SparkSession, root: str) -> StageSummary:
    """Rebuild each gold report whose silver inputs changed since it was last written."""
    start = time.time()
    summary = StageSummary("report")
    silver = {name: lakehouse.table_path(root, "silver", name)
              for name in (FACT, DIM_CUSTOMER, DIM_PRODUCT, DIM_DATETIME)}
    for path in silver.values():
        if not lakehouse.exists(spark, path):
            raise InputError(f"{path}: no silver table; run 'custseg refine' first")
    versions = {name: lakehouse.version(spark, path) for name, path in silver.items()}
    fact = lakehouse.read(spark, silver[FACT])
    customers = lakehouse.read(spark, silver[DIM_CUSTOMER])
    products = lakehouse.read(spark, silver[DIM_PRODUCT])
    datetimes = lakehouse.read(spark, silver[DIM_DATETIME])
    summary.rows_in = fact.count()
    reports: dict[str, Callable[[], DataFrame]] = {
        "report_customers": lambda: report_customers(fact, customers),
        "report_sales": lambda: report_sales(fact, products, datetimes),
        "report_transactions": lambda: report_transactions(fact),
        "report_country_customers": lambda: report_country_customers(fact),
        "report_product_invoices": lambda: report_product_invoices(fact, products),
        "report_year_invoices": lambda: report_year_invoices(fact),
    }
    unchanged = 0
    for name, build in reports.items():
        path = lakehouse.table_path(root, "gold", name)
        if lakehouse.last_metadata(spark, path).get("silver_versions") == versions:
            unchanged += 1
        else:
            lakehouse.overwrite(build(), path, {"silver_versions": versions})
        summary.rows_out[f"gold/{name}"] = lakehouse.read(spark, path).count()
    if unchanged == len(reports):
        summary.notes.append("silver unchanged since the last report; gold left as it was")
    summary.seconds = time.time() - start
    return summary
