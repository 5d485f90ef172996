"""Synthetic invoice lines in the UCI layout, at any scale, written in parallel by Spark.

Every random draw is a hash of (seed, draw name, customer, order, line), so the output is the
same for a seed whatever the partitioning. Shapes follow the UCI data: heavy-tailed order
counts, basket sizes and quantities, customers who stop buying, a September-December peak,
mostly UK customers, skewed product popularity, plus cancellations, anonymous checkouts,
exact duplicate lines and a few bad rows (missing date, zero price, missing invoice).
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.runtime.session import parallelism

START = "2010-12-01 00:00:00"
DAYS = 374
PRODUCTS = 3900
COUNTRIES = [
    ("United Kingdom", 0.89), ("Germany", 0.022), ("France", 0.02), ("EIRE", 0.012),
    ("Spain", 0.007), ("Netherlands", 0.006), ("Belgium", 0.006), ("Switzerland", 0.005),
    ("Portugal", 0.005), ("Australia", 0.004), ("Norway", 0.003), ("Italy", 0.003),
    ("Channel Islands", 0.003), ("Finland", 0.003), ("Cyprus", 0.002), ("Sweden", 0.002),
    ("Austria", 0.002), ("Denmark", 0.002), ("Japan", 0.002), ("Poland", 0.002),
    ("USA", 0.002), ("Israel", 0.002), ("Unspecified", 0.001), ("Singapore", 0.001),
]


class _Draws:
    """Uniform and normal draws keyed by the seed, a name and the row's identity columns."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def u(self, name: str, *keys: Column) -> Column:
        h = F.xxhash64(F.lit(self.seed), F.lit(name), *keys)
        return (F.pmod(h, F.lit(1 << 52)).cast("double") + 0.5) / float(1 << 52)

    def normal(self, name: str, *keys: Column) -> Column:
        u1, u2 = self.u(name + ".1", *keys), self.u(name + ".2", *keys)
        return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


def _country(u: Column) -> Column:
    expr = None
    cumulative = 0.0
    total = sum(w for _, w in COUNTRIES)
    for name, weight in COUNTRIES:
        cumulative += weight / total
        expr = (F.when(u < cumulative, F.lit(name)) if expr is None
                else expr.when(u < cumulative, F.lit(name)))
    return expr.otherwise(F.lit(COUNTRIES[0][0]))


def generate(spark: SparkSession, customers: int, seed: int = 42) -> DataFrame:
    """Invoice lines for ``customers`` customers over a year, in the UCI parquet schema."""
    r = _Draws(seed)
    return _as_uci(_lines(_orders(_customers(spark, customers, r), r), r))


def _customers(spark: SparkSession, customers: int, r: _Draws) -> DataFrame:
    """One row per customer: country, whether anonymous, first and last day, order count and
    the scales of their baskets and quantities."""
    parts = max(parallelism(spark), customers // 50_000 + 1)
    c = F.col("cid")
    cust = spark.range(0, customers, numPartitions=parts).select(
        F.col("id").alias("cid"),
        (F.lit(12346) + F.col("id")).alias("customer_no"),
    ).select(
        "*",
        _country(r.u("country", c)).alias("country"),
        (r.u("anon", c) < 0.10).alias("anonymous"),
        F.floor(F.pow(r.u("first", c), 1.3) * DAYS).cast("int").alias("first_day"),
        (r.u("churn", c) < 0.35).alias("churns"),
        F.least(F.lit(300), F.lit(1) + F.floor(
            -F.log(r.u("orders", c)) * 2.2 * F.exp(0.9 * r.normal("orders_scale", c)))
        ).cast("int").alias("n_orders"),
        (2.5 * F.exp(1.2 * r.normal("basket", c))).alias("basket_scale"),
        F.exp(0.8 * r.normal("qty", c)).alias("qty_scale"),
    )
    return cust.withColumn(
        "last_day",
        F.when(F.col("churns"), F.col("first_day") + F.floor(
            (DAYS - F.col("first_day")) * r.u("last", c)).cast("int")
        ).otherwise(F.lit(DAYS - 1)),
    )


def _orders(cust: DataFrame, r: _Draws) -> DataFrame:
    """One row per order: its time (30% in the pre-Christmas peak), number and line count."""
    c, o = F.col("cid"), F.col("order_no")
    orders = cust.select("*", F.explode(F.sequence(F.lit(1), F.col("n_orders"))).alias("order_no"))
    span = F.col("last_day") - F.col("first_day") + 1
    uniform_day = F.col("first_day") + F.floor(r.u("day", c, o) * span)
    peak_day = F.lit(DAYS - 1) - F.floor(r.u("peak", c, o) * 100)
    day = F.when(r.u("is_peak", c, o) < 0.3,
                 F.least(F.col("last_day"), F.greatest(F.col("first_day"), peak_day))
                 ).otherwise(uniform_day)
    minute = F.floor(r.u("hour", c, o) * 10 * 60) + 8 * 60
    return orders.select(
        "*",
        (F.to_timestamp(F.lit(START)) + F.make_dt_interval(day.cast("int"), F.lit(0),
                                                            minute.cast("int"))
         ).alias("ts"),
        (F.lit(1_000_000) + c * 301 + o).cast("string").alias("invoice"),
        F.least(F.lit(200), F.lit(1) + F.floor(
            -F.log(r.u("lines", c, o)) * F.col("basket_scale"))).cast("int").alias("n_lines"),
    )


def _lines(orders: DataFrame, r: _Draws) -> DataFrame:
    """One row per line: a product (skewed popularity), quantity, price and a draw ``kind``
    that picks the bad rows, cancellations and duplicates."""
    c, o, line = F.col("cid"), F.col("order_no"), F.col("line_no")
    lines = orders.select("*", F.explode(F.sequence(F.lit(1), F.col("n_lines"))).alias("line_no"))
    product = F.floor(F.pow(r.u("product", c, o, line), 2.5) * PRODUCTS).cast("int")
    return lines.select(
        "*",
        product.alias("product"),
        F.greatest(F.lit(1), F.floor(F.col("qty_scale") * F.exp(
            0.9 * r.normal("quantity", c, o, line)) * 4)).cast("long").alias("qty"),
    ).select(
        "*",
        F.greatest(F.lit(0.1), F.round(F.exp(0.8 * r.normal("price", F.col("product"))) * 2.1, 2)
                   ).alias("price"),
        F.concat(F.lit("P"), F.lpad(F.col("product").cast("string"), 5, "0")).alias("code"),
        r.u("kind", c, o, line).alias("kind"),
    )


def _as_uci(lines: DataFrame) -> DataFrame:
    """The UCI columns, with bad rows (no invoice, no date, zero price), anonymous checkouts,
    a cancellation a day after 2% of the lines and an exact duplicate of 0.5%."""
    sale = lines.select(
        F.when(F.col("kind") < 0.0002, F.lit(None)).otherwise(F.col("invoice")).alias("InvoiceNo"),
        F.col("code").alias("StockCode"),
        F.concat(F.lit("PRODUCT "), F.col("code")).alias("Description"),
        F.col("qty").alias("Quantity"),
        F.when((F.col("kind") >= 0.0002) & (F.col("kind") < 0.0004), F.lit(None))
        .otherwise(F.col("ts")).alias("InvoiceDate"),
        F.when((F.col("kind") >= 0.0004) & (F.col("kind") < 0.0010), F.lit(0.0))
        .otherwise(F.col("price")).alias("UnitPrice"),
        F.when(F.col("anonymous"), F.lit(None)).otherwise(F.col("customer_no"))
        .cast("double").alias("CustomerID"),
        F.col("country").alias("Country"),
        F.col("kind"),
    )
    cancellations = sale.where((F.col("kind") > 0.98) & F.col("InvoiceNo").isNotNull()
                               & F.col("InvoiceDate").isNotNull()).select(
        F.concat(F.lit("C"), F.col("InvoiceNo")).alias("InvoiceNo"),
        "StockCode", "Description",
        (-F.col("Quantity")).alias("Quantity"),
        (F.col("InvoiceDate") + F.expr("INTERVAL 1 DAY")).alias("InvoiceDate"),
        "UnitPrice", "CustomerID", "Country", "kind",
    )
    duplicates = sale.where((F.col("kind") > 0.97) & (F.col("kind") <= 0.975))
    return (sale.unionByName(cancellations).unionByName(duplicates).drop("kind")
            .withColumn("InvoiceDate", F.col("InvoiceDate").cast("timestamp_ntz")))


def generate_to(spark: SparkSession, customers: int, out: str, seed: int = 42) -> int:
    """Write the generated lines to ``out`` (csv by extension, else parquet); return the count."""
    df = generate(spark, customers, seed)
    if out.lower().endswith(".csv"):
        df = df.withColumn("InvoiceDate", F.date_format("InvoiceDate", "yyyy-MM-dd HH:mm:ss"))
        df.write.mode("overwrite").option("header", "true").csv(out)
        return spark.read.option("header", "true").csv(out).count()
    df.write.mode("overwrite").parquet(out)
    return spark.read.parquet(out).count()
