"""Gold reporting transforms: invoice totals, sales, purchase nature, country activity and
the customer report. DataFrame in, DataFrame out; the report stage writes them."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.io.arrow import from_rows


def latest_segments(rfm: DataFrame) -> DataFrame:
    """Each customer's score, segment and tier at the latest as-of date in ``rfm``."""
    latest = rfm.agg(F.max("as_of").alias("as_of"))
    return rfm.join(F.broadcast(latest), "as_of").select(
        "customer_id", F.col("as_of").alias("segment_as_of"), "rfm_score", "segment",
        "value_tier")


def invoice_totals(fact: DataFrame) -> DataFrame:
    """Lines, items and sales per invoice, customer, country and timestamp.

    The grain every invoice, customer, country and month report is built from: about a fifth
    of the lines of generated data, aggregated from the fact once instead of once per report.
    """
    return fact.groupBy("invoice_no", "customer_id", "country", "invoice_date").agg(
        F.count("*").alias("lines"),
        F.sum("quantity").alias("items"),
        F.sum("total_price").alias("sales"),
    )


def report_customers(
    totals: DataFrame, customers: DataFrame, rfm: DataFrame | None = None
) -> DataFrame:
    """Per identified customer (from ``invoice_totals``): country, orders, items, total
    purchase, first and last purchase, and (once segmented) the latest RFM score, segment and
    value tier."""
    agg = (totals.where(F.col("customer_id").isNotNull()).groupBy("customer_id").agg(
        F.countDistinct("invoice_no").alias("orders"),
        F.sum("items").cast("long").alias("items"),
        F.sum("sales").alias("total_purchase"),
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


def report_transactions(totals: DataFrame) -> DataFrame:
    """Per invoice (from ``invoice_totals``): date, customer, country, lines, items and sales."""
    return totals.groupBy("invoice_no").agg(
        F.min("invoice_date").alias("invoice_date"),
        F.first("customer_id", ignorenulls=True).alias("customer_id"),
        F.first("country", ignorenulls=True).alias("country"),
        F.sum("lines").alias("lines"),
        F.sum("items").cast("long").alias("items"),
        F.sum("sales").alias("sales"),
    )


def report_country_customers(totals: DataFrame) -> DataFrame:
    """Per country (from ``invoice_totals``): identified customers, invoices and revenue
    (anonymous lines included)."""
    return totals.groupBy("country").agg(
        F.countDistinct("customer_id").alias("customers"),
        F.countDistinct("invoice_no").alias("invoices"),
        F.sum("sales").alias("revenue"),
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


def report_year_invoices(totals: DataFrame) -> DataFrame:
    """Per year and month (from ``invoice_totals``): invoices and revenue."""
    return (totals.groupBy(F.year("invoice_date").alias("year"),
                           F.month("invoice_date").alias("month"))
            .agg(F.countDistinct("invoice_no").alias("invoices"),
                 F.sum("sales").alias("revenue")))


PURCHASE_CLASSES = ("personal", "bulk", "reseller")


def purchase_class(items: Column, bulk_min_items: int, reseller_min_items: int) -> Column:
    """An order's class by the items (units) on it: personal, bulk or reseller."""
    return (F.when(items >= reseller_min_items, "reseller")
            .when(items >= bulk_min_items, "bulk").otherwise("personal"))


def purchase_nature(totals: DataFrame, bulk_min_items: int, reseller_min_items: int
                    ) -> DataFrame:
    """Per purchase class (from ``invoice_totals``): orders, customers placing them, items,
    revenue and their shares.

    Orders are invoices; a customer who places orders of two classes counts in both.
    """
    orders = totals.groupBy("invoice_no").agg(
        F.first("customer_id", ignorenulls=True).alias("customer_id"),
        F.sum("items").cast("long").alias("items"),
        F.sum("sales").alias("revenue"),
    ).withColumn("purchase_class",
                 purchase_class(F.col("items"), bulk_min_items, reseller_min_items))
    per_class = orders.groupBy("purchase_class").agg(
        F.count("*").alias("orders"),
        F.countDistinct("customer_id").alias("customers"),
        F.sum("items").alias("items"),
        F.sum("revenue").alias("revenue"),
    )
    bounds = {"personal": (0, bulk_min_items - 1), "bulk": (bulk_min_items, reseller_min_items - 1),
              "reseller": (reseller_min_items, None)}
    classes = F.broadcast(from_rows(
        orders.sparkSession,
        [(c, i, lo, hi) for i, (c, (lo, hi)) in enumerate(bounds.items())],
        "purchase_class string, class_order int, min_items long, max_items long"))
    totals = F.broadcast(orders.agg(F.count("*").alias("_orders"),
                                    F.sum("revenue").alias("_revenue")))
    return (classes.join(per_class, "purchase_class", "left").crossJoin(totals)
            .select("purchase_class", "class_order", "min_items", "max_items",
                    F.coalesce("orders", F.lit(0)).alias("orders"),
                    F.coalesce("customers", F.lit(0)).alias("customers"),
                    F.coalesce("items", F.lit(0)).alias("items"),
                    F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
                    (F.coalesce("orders", F.lit(0)) / F.col("_orders")).alias("share_orders"),
                    (F.coalesce("revenue", F.lit(0.0)) / F.col("_revenue"))
                    .alias("share_revenue"),
                    (F.col("revenue") / F.col("orders")).alias("average_order_value")))


def country_activity(totals: DataFrame, growth_months: int) -> DataFrame:
    """Per country (from ``invoice_totals``): customers, orders, revenue, revenue per customer
    and growth.

    Growth compares the last ``growth_months`` months up to the last invoice with the
    ``growth_months`` before them (revenue and active customers); null where the earlier
    period had none. Revenue includes anonymous lines; revenue per customer uses only the
    identified customers' revenue.
    """
    end = totals.agg(F.max("invoice_date").alias("period_end"))
    lines = totals.crossJoin(F.broadcast(end)).withColumn(
        "_period",
        F.when(F.col("invoice_date") > F.add_months("period_end", -growth_months), "recent")
        .when(F.col("invoice_date") > F.add_months("period_end", -2 * growth_months),
              "previous"))
    known = F.col("customer_id").isNotNull()

    def in_period(name: str, col: Column) -> Column:
        return F.when(F.col("_period") == name, col)

    agg = lines.groupBy("country").agg(
        F.countDistinct("customer_id").alias("customers"),
        F.countDistinct("invoice_no").alias("orders"),
        F.sum("sales").alias("revenue"),
        F.sum(F.when(known, F.col("sales"))).alias("_customer_revenue"),
        F.coalesce(F.sum(in_period("recent", F.col("sales"))), F.lit(0.0))
        .alias("revenue_recent"),
        F.coalesce(F.sum(in_period("previous", F.col("sales"))), F.lit(0.0))
        .alias("revenue_previous"),
        F.countDistinct(in_period("recent", F.col("customer_id"))).alias("customers_recent"),
        F.countDistinct(in_period("previous", F.col("customer_id")))
        .alias("customers_previous"),
        F.first("period_end").alias("period_end"),
    )

    def growth(now: str, before: str) -> Column:
        return F.when(F.col(before) > 0, F.col(now) / F.col(before) - 1)

    return agg.select(
        "country", "customers", "orders", "revenue",
        (F.col("_customer_revenue") / F.col("customers")).alias("revenue_per_customer"),
        (F.col("revenue") / F.col("orders")).alias("average_order_value"),
        "revenue_recent", "revenue_previous",
        growth("revenue_recent", "revenue_previous").alias("revenue_growth"),
        "customers_recent", "customers_previous",
        growth("customers_recent", "customers_previous").alias("customer_growth"),
        F.lit(growth_months).alias("growth_months"), "period_end",
    )
