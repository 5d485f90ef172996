"""The business questions as DataFrames: who the best customers are, who could become so, whom
to retain, and what characterises each segment. Used by the dashboard and the notebooks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

POTENTIAL = ("Potential Loyalists", "Promising", "New Customers", "Need Attention")
RETAIN = ("At Risk", "Cannot Lose Them")
CUSTOMER_COLUMNS = ("customer_id", "segment", "country", "recency_days", "frequency",
                    "monetary")


def at(df: DataFrame, as_of: dt.date) -> DataFrame:
    """The rows of one as-of date."""
    return df.where(F.col("as_of") == F.lit(as_of))


def _with_value(segments: DataFrame, predictions: DataFrame | None) -> DataFrame:
    cols = list(CUSTOMER_COLUMNS)
    if predictions is None:
        return segments.select(*cols, F.lit(None).cast("double").alias("predicted_spend"),
                               F.lit(None).cast("string").alias("predicted_tier"),
                               F.lit(None).cast("double").alias("p_alive"))
    return segments.select(*cols).join(
        predictions.select("customer_id", "predicted_spend", "predicted_tier", "p_alive"),
        "customer_id", "left")


def best_customers(segments: DataFrame, predictions: DataFrame | None = None, n: int = 20,
                   names: Sequence[str] = ("Champions",)) -> DataFrame:
    """The top ``n`` customers of the best segments by spend to date."""
    return (_with_value(segments.where(F.col("segment").isin(*names)), predictions)
            .orderBy(F.desc("monetary"), "customer_id").limit(n))


def potential_customers(segments: DataFrame, predictions: DataFrame | None = None,
                        n: int = 20, names: Sequence[str] = POTENTIAL) -> DataFrame:
    """Customers of the promising segments with the highest predicted spend (spend to date
    when there are no predictions)."""
    rows = _with_value(segments.where(F.col("segment").isin(*names)), predictions)
    return rows.orderBy(F.desc_nulls_last("predicted_spend"), F.desc("monetary"),
                        "customer_id").limit(n)


def customers_to_retain(segments: DataFrame, predictions: DataFrame, n: int = 20,
                        names: Sequence[str] = RETAIN) -> DataFrame:
    """Customers of the slipping segments with the highest predicted spend: the ones a
    win-back campaign should reach first."""
    return (_with_value(segments.where(F.col("segment").isin(*names)), predictions)
            .where(F.col("predicted_spend").isNotNull())
            .orderBy(F.desc("predicted_spend"), "customer_id").limit(n))


def segment_profile(segments: DataFrame, predictions: DataFrame | None = None) -> DataFrame:
    """Per segment: customers and their share, revenue share, median R, F, M, average order
    value, return rate, main country and (with predictions) predicted spend per customer."""
    rows = segments
    if predictions is not None:
        rows = rows.join(predictions.select("customer_id", "predicted_spend"), "customer_id",
                         "left")
    else:
        rows = rows.withColumn("predicted_spend", F.lit(None).cast("double"))
    totals = F.broadcast(rows.agg(F.count("*").alias("_n"), F.sum("monetary").alias("_m")))
    by_country = (rows.groupBy("segment", "country").count()
                  .withColumn("_rank", F.row_number().over(
                      Window.partitionBy("segment").orderBy(F.desc("count"), "country")))
                  .where(F.col("_rank") == 1)
                  .select("segment", F.col("country").alias("main_country"),
                          F.col("count").alias("_in_country")))
    agg = rows.groupBy("segment").agg(
        F.count("*").alias("customers"),
        F.sum("monetary").alias("revenue"),
        F.percentile_approx("recency_days", 0.5, 10000).alias("median_recency_days"),
        F.percentile_approx("frequency", 0.5, 10000).alias("median_frequency"),
        F.percentile_approx("monetary", 0.5, 10000).alias("median_monetary"),
        F.avg("avg_order_value").alias("mean_order_value"),
        F.avg("return_rate").alias("mean_return_rate"),
        F.avg("predicted_spend").alias("mean_predicted_spend"),
    )
    return (agg.join(by_country, "segment").crossJoin(totals)
            .select("segment", "customers",
                    (F.col("customers") / F.col("_n")).alias("share_customers"),
                    "revenue", (F.col("revenue") / F.col("_m")).alias("share_revenue"),
                    "median_recency_days", "median_frequency", "median_monetary",
                    "mean_order_value", "mean_return_rate", "main_country",
                    (F.col("_in_country") / F.col("customers")).alias("main_country_share"),
                    "mean_predicted_spend"))
