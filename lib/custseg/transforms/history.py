"""Each identified customer's purchases at invoice grain: what every customer feature and label
is computed from.

The fact holds one row per invoice line; features need only invoices (their date, country,
lines and value) and, for the count of distinct products, the first purchase of each product
by each customer. Both are a fraction of the lines (on the UCI data 18,500 invoices and 266,000
customer-products for 397,000 identified lines), so a stage that computes features at many
dates builds them once, caches them, and reads them at every date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.io.arrow import from_rows


def customer_sample(df: DataFrame, rate: float, seed: int) -> DataFrame:
    """The rows of a seeded share ``rate`` of the customers (all rows of each one kept)."""
    if rate >= 1.0:
        return df
    buckets = 1_000_000
    return df.where(F.pmod(F.xxhash64("customer_id", F.lit(seed)), F.lit(buckets))
                    < F.lit(int(rate * buckets)))


@dataclass(frozen=True)
class History:
    """Invoices (customer_id, invoice_no, invoice_date, country, lines, total), the products
    each customer bought for the first time at each moment (customer_id, first_date,
    new_products) and cancellations (customer_id, invoice_date, amount) of identified
    customers."""

    invoices: DataFrame
    products: DataFrame
    cancellations: DataFrame

    @classmethod
    def of(cls, fact: DataFrame, cancellations: DataFrame) -> History:
        """The history in ``fact`` and ``cancellations`` (not computed until read).

        An invoice's lines are grouped with their own timestamp and country, so filtering the
        invoices by date keeps exactly the lines that filtering the fact would.
        """
        known = fact.where(F.col("customer_id").isNotNull())
        invoices = known.groupBy("customer_id", "invoice_no", "invoice_date", "country").agg(
            F.count("*").alias("lines"), F.sum("total_price").alias("total"))
        products = (known.groupBy("customer_id", "stock_code")
                    .agg(F.min("invoice_date").alias("first_date"))
                    .groupBy("customer_id", "first_date").agg(F.count("*").alias("new_products")))
        returns = cancellations.where(F.col("customer_id").isNotNull()).select(
            "customer_id", "invoice_date", "amount")
        return cls(invoices, products, returns)

    def sample(self, rate: float, seed: int) -> History:
        """The history of a seeded share of the customers."""
        return History(*(customer_sample(df, rate, seed)
                         for df in (self.invoices, self.products, self.cancellations)))

    def persist(self) -> History:
        """Cache the three tables (for a stage that reads them at many dates)."""
        return History(*(df.persist() for df in (self.invoices, self.products,
                                                  self.cancellations)))

    def unpersist(self) -> None:
        """Release what ``persist`` cached."""
        for df in (self.invoices, self.products, self.cancellations):
            df.unpersist()


def dates_frame(spark: SparkSession, days: list[dt.date]) -> DataFrame:
    """One row per date, column ``as_of``."""
    return from_rows(spark, [(d,) for d in days], "as_of date")


def at_dates(df: DataFrame, days: DataFrame, column: str = "invoice_date") -> DataFrame:
    """Each row of ``df`` once for every date of ``days`` (column ``as_of``) it is strictly
    before: the rows features at that date are computed from."""
    return (df.crossJoin(F.broadcast(days))
            .where(F.col(column) < F.col("as_of").cast("timestamp")))
