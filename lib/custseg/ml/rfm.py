"""Recency, Frequency, Monetary and model features per customer as of a date; scores; segments.

All transforms are DataFrame in, DataFrame out; scoring and naming are Spark ML stages
(``RfmScorer``, ``SegmentMapper``). Quantile cut points come from ``percentile_approx`` in one
aggregate row, so only twelve numbers reach the driver and there is no global sort.
"""

from __future__ import annotations

import datetime as dt
import json

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Pipeline, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.transforms.history import History, at_dates, dates_frame

SCORED = ("recency_days", "frequency", "monetary")


def default_as_of(fact: DataFrame) -> dt.date:
    """The day after the last invoice in the fact."""
    last = fact.agg(F.max("invoice_date")).first()[0]
    if last is None:
        raise InputError("silver/fct_invoices is empty: nothing to segment")
    return last.date() + dt.timedelta(days=1)


def customer_features(
    fact: DataFrame, cancellations: DataFrame, as_of: dt.date, windows: list[int]
) -> DataFrame:
    """One row per identified customer with a purchase before ``as_of`` (see
    ``history_features``), from the fact and the cancellations."""
    return history_features(History.of(fact, cancellations), [as_of], windows)


def history_features(history: History, days: list[dt.date], windows: list[int]) -> DataFrame:
    """One row per date of ``days`` and identified customer with a purchase before it.

    ``recency_days``: as-of date minus the date of the last purchase; ``frequency``: distinct
    invoices; ``monetary``: sum of ``total_price``; plus tenure, average order value, distinct
    products, mean days between purchases, return rate (cancelled value over purchased value),
    main country (most lines, then the latest), and frequency and monetary over each trailing
    window.
    """
    spark = history.invoices.sparkSession
    dates = dates_frame(spark, days)
    sales = at_dates(history.invoices, dates).withColumn("day", F.to_date("invoice_date"))
    key = ["as_of", "customer_id"]
    invoices = sales.groupBy(*key, "invoice_no").agg(
        F.min("day").alias("day"), F.sum("total").alias("total"))
    aggs = [
        F.datediff(F.col("as_of"), F.max("day")).alias("recency_days"),
        F.count("*").alias("frequency"),
        F.sum("total").alias("monetary"),
        F.datediff(F.col("as_of"), F.min("day")).alias("tenure_days"),
        F.datediff(F.max("day"), F.min("day")).alias("_span_days"),
    ]
    for w in windows:
        in_window = F.col("day") >= F.date_sub(F.col("as_of"), w)
        aggs.append(F.sum(in_window.cast("int")).alias(f"frequency_{w}d"))
        aggs.append(F.coalesce(F.sum(F.when(in_window, F.col("total"))), F.lit(0.0)).alias(
            f"monetary_{w}d"))
    base = invoices.groupBy(*key).agg(*aggs)
    products = at_dates(history.products, dates, "first_date").groupBy(*key).agg(
        F.sum("new_products").alias("distinct_products"))
    by_country = sales.groupBy(*key, "country").agg(
        F.sum("lines").alias("n"), F.max("invoice_date").alias("last"))
    country = by_country.groupBy(*key).agg(
        F.max_by("country", F.struct("n", "last", "country")).alias("country"))
    returned = at_dates(history.cancellations, dates).groupBy(*key).agg(
        F.sum(F.abs("amount")).alias("_returned"))
    out = (base.join(products, key).join(country, key, "left").join(returned, key, "left")
           .withColumn("avg_order_value", F.col("monetary") / F.col("frequency"))
           .withColumn("days_between_purchases",
                       F.when(F.col("frequency") > 1,
                              F.col("_span_days") / (F.col("frequency") - 1)))
           .withColumn("return_rate",
                       F.coalesce(F.col("_returned"), F.lit(0.0)) / F.col("monetary"))
           .drop("_span_days", "_returned"))
    window_cols = [c for w in windows for c in (f"frequency_{w}d", f"monetary_{w}d")]
    return out.select(
        "customer_id", "as_of", "country", "recency_days", "frequency", "monetary",
        "tenure_days", "avg_order_value", "distinct_products", "days_between_purchases",
        "return_rate", *window_cols)


def score_cut_points(features: DataFrame, accuracy: int) -> DataFrame:
    """One row: the 20/40/60/80% cut points of recency, frequency and monetary."""
    probs = [0.2, 0.4, 0.6, 0.8]
    return features.agg(*[
        F.percentile_approx(F.col(c).cast("double"), probs, accuracy).alias(f"cuts_{c}")
        for c in SCORED
    ])


def _score(value: Column, cuts: list[float], reverse: bool) -> Column:
    below = sum((F.lit(cut) < value.cast("double")).cast("int") for cut in cuts)
    score = F.lit(1) + below
    return (F.lit(6) - score if reverse else score).cast("int")


class RfmScorer(Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Learns the quintile cut points of recency, frequency and monetary with
    ``percentile_approx`` (one aggregate row: twelve numbers reach the driver, no global sort)."""

    accuracy = Param(Params._dummy(), "accuracy", "percentile_approx accuracy",
                     TypeConverters.toInt)

    @keyword_only
    def __init__(self, accuracy: int = 10000) -> None:
        super().__init__()
        self._setDefault(accuracy=10000)
        self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> RfmScores:
        row = score_cut_points(dataset, self.getOrDefault(self.accuracy)).first()
        cuts = {c: [float(v) for v in (row[f"cuts_{c}"] or [])] for c in SCORED}
        return RfmScores(recencyCuts=cuts["recency_days"], frequencyCuts=cuts["frequency"],
                         monetaryCuts=cuts["monetary"])


class RfmScores(Model, DefaultParamsReadable, DefaultParamsWritable):
    """R, F, M scores 1-5: 1 + cut points strictly below the value (6 minus that for R), and
    ``rfm_score`` as their three digits."""

    recencyCuts = Param(Params._dummy(), "recencyCuts", "recency cut points",
                        TypeConverters.toListFloat)
    frequencyCuts = Param(Params._dummy(), "frequencyCuts", "frequency cut points",
                          TypeConverters.toListFloat)
    monetaryCuts = Param(Params._dummy(), "monetaryCuts", "monetary cut points",
                         TypeConverters.toListFloat)

    @keyword_only
    def __init__(self, recencyCuts: list[float] | None = None,
                 frequencyCuts: list[float] | None = None,
                 monetaryCuts: list[float] | None = None) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        cut = self.getOrDefault
        return (dataset
                .withColumn("r_score", _score(F.col("recency_days"), cut(self.recencyCuts), True))
                .withColumn("f_score", _score(F.col("frequency"), cut(self.frequencyCuts), False))
                .withColumn("m_score", _score(F.col("monetary"), cut(self.monetaryCuts), False))
                .withColumn("rfm_score", F.concat(F.col("r_score").cast("string"),
                                                  F.col("f_score").cast("string"),
                                                  F.col("m_score").cast("string"))))


def segment_expr(segments: list[dict]) -> Column:
    """The configured R-F map as one CASE expression."""
    expr = None
    for s in segments:
        cond = F.col("r_score").isin(s["r"]) & F.col("f_score").isin(s["f"])
        expr = F.when(cond, F.lit(s["name"])) if expr is None else expr.when(cond, s["name"])
    return expr


def tier_expr(tiers: list[dict]) -> Column:
    """The configured M-score tiers as one CASE expression."""
    expr = None
    for t in tiers:
        cond = F.col("m_score").isin(t["m"])
        expr = F.when(cond, F.lit(t["name"])) if expr is None else expr.when(cond, t["name"])
    return expr


class SegmentMapper(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Names each customer's ``segment`` from (R, F) and ``value_tier`` from M, by the
    configured maps (``segment.segments`` and ``segment.value_tiers``, kept as JSON)."""

    segments = Param(Params._dummy(), "segments", "R-F map as JSON", TypeConverters.toString)
    valueTiers = Param(Params._dummy(), "valueTiers", "M tiers as JSON", TypeConverters.toString)

    @keyword_only
    def __init__(self, segments: str = "[]", valueTiers: str = "[]") -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return (dataset
                .withColumn("segment", segment_expr(json.loads(self.getOrDefault(self.segments))))
                .withColumn("value_tier",
                            tier_expr(json.loads(self.getOrDefault(self.valueTiers)))))


def rfm_pipeline(cfg: Config) -> Pipeline:
    """Scores, then names: the RFM steps as one Spark ML pipeline."""
    seg = cfg["segment"]
    return Pipeline(stages=[
        RfmScorer(accuracy=seg["score_accuracy"]),
        SegmentMapper(segments=json.dumps(seg["segments"]),
                      valueTiers=json.dumps(seg["value_tiers"]))])


def rfm_segments(features: DataFrame, cfg: Config) -> DataFrame:
    """Scores, ``rfm_score``, named ``segment`` and ``value_tier`` for every customer."""
    return rfm_pipeline(cfg).fit(features).transform(features)
