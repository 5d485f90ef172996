"""What changed between two as-of dates: segment migration, segment shares, the population
stability of R, F, M and the model features, and the stability of the clusters.

Every function returns a small aggregate; no customer rows leave the executors.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.ml.clusters import adjusted_rand_index
from custseg.ml.quantiles import even_cuts

NEW = "(new)"
GONE = "(gone)"
PSI_FLOOR = 1e-4  # a bin empty on one side would make PSI infinite


def as_of_dates(rfm: DataFrame) -> list[dt.date]:
    """The as-of dates present in gold/rfm_segments, oldest first (one row per date)."""
    return sorted(r["as_of"] for r in rfm.select("as_of").distinct().collect())


def segment_migration(rfm: DataFrame, before: dt.date, after: dt.date) -> DataFrame:
    """(from_segment, to_segment, customers, revenue) between two as-of dates.

    Customers first scored at ``after`` come from ``(new)``; those scored only at ``before`` go
    to ``(gone)``. Revenue is what the customers spent between the two dates (the change in
    their monetary value).
    """
    a = rfm.where(F.col("as_of") == F.lit(before)).select(
        "customer_id", F.col("segment").alias("from_segment"), F.col("monetary").alias("_m0"))
    b = rfm.where(F.col("as_of") == F.lit(after)).select(
        "customer_id", F.col("segment").alias("to_segment"), F.col("monetary").alias("_m1"))
    return (a.join(b, "customer_id", "full_outer")
            .groupBy(F.coalesce("from_segment", F.lit(NEW)).alias("from_segment"),
                     F.coalesce("to_segment", F.lit(GONE)).alias("to_segment"))
            .agg(F.count("*").alias("customers"),
                 F.sum(F.coalesce("_m1", F.lit(0.0)) - F.coalesce("_m0", F.lit(0.0)))
                 .alias("revenue")))


def segment_shares(rfm: DataFrame, before: dt.date, after: dt.date) -> DataFrame:
    """Per segment: share of customers at each date and the change (after - before)."""
    dated = rfm.where(F.col("as_of").isin(before, after))
    totals = dated.groupBy("as_of").agg(F.count("*").alias("_n"))
    shares = (dated.groupBy("as_of", "segment").agg(F.count("*").alias("customers"))
              .join(F.broadcast(totals), "as_of")
              .withColumn("share", F.col("customers") / F.col("_n")))
    wide = shares.groupBy("segment").agg(
        F.sum(F.when(F.col("as_of") == F.lit(before), F.col("share"))).alias("share_before"),
        F.sum(F.when(F.col("as_of") == F.lit(after), F.col("share"))).alias("share_after"))
    before_share = F.coalesce("share_before", F.lit(0.0))
    after_share = F.coalesce("share_after", F.lit(0.0))
    return wide.select("segment", before_share.alias("share_before"),
                       after_share.alias("share_after"),
                       (after_share - before_share).alias("share_change"))


def psi(expected: DataFrame, actual: DataFrame, column: str, bins: int = 10) -> float:
    """Population stability index of ``column``: sum over bins of (q - p) ln(q / p).

    Bins are the quantiles of ``expected`` (``percentile_approx``; tied cut points merge), p
    and q the shares of each population per bin, floored at 1e-4.
    """
    cuts = expected.select(even_cuts(F.col(column).cast("double"), bins, 10000)
                           .alias("q")).first()["q"]
    edges = sorted({float(c) for c in cuts or []})
    splits = [-math.inf, *edges, math.inf]

    def shares(df: DataFrame) -> dict[float, float]:
        b = Bucketizer(splits=splits, inputCol="_x", outputCol="_bin", handleInvalid="skip")
        counted = (b.transform(df.select(F.col(column).cast("double").alias("_x")))
                   .groupBy("_bin").count().collect())  # at most ``bins`` rows
        total = sum(r["count"] for r in counted) or 1
        return {r["_bin"]: r["count"] / total for r in counted}

    p, q = shares(expected), shares(actual)
    out = 0.0
    for i in range(len(splits) - 1):
        pi = max(p.get(float(i), 0.0), PSI_FLOOR)
        qi = max(q.get(float(i), 0.0), PSI_FLOOR)
        out += (qi - pi) * math.log(qi / pi)
    return out


def cluster_stability(clusters: DataFrame, before: dt.date, after: dt.date) -> float | None:
    """Adjusted Rand index of the cluster assignments at two dates, on the customers in both.

    Only the k x k contingency table reaches the driver.
    """
    a = clusters.where(F.col("as_of") == F.lit(before)).select(
        "customer_id", F.col("cluster").alias("a"))
    b = clusters.where(F.col("as_of") == F.lit(after)).select(
        "customer_id", F.col("cluster").alias("b"))
    cells = a.join(b, "customer_id").groupBy("a", "b").count().collect()
    return adjusted_rand_index([(r["a"], r["b"], r["count"]) for r in cells])


RFM_FEATURES = ("recency_days", "frequency", "monetary")
# the CLV model's features that gold/rfm_segments keeps (the BTYD ones are rebuilt per run)
MODEL_FEATURES = ("tenure_days", "avg_order_value", "distinct_products",
                  "days_between_purchases", "return_rate")


@dataclass
class Check:
    """One drift measure against its threshold."""

    check: str
    kind: str
    value: float | None
    threshold: float
    breach: bool


def compare(rfm: DataFrame, before: dt.date, after: dt.date, cfg: dict,
            clusters: DataFrame | None = None, predictions: DataFrame | None = None
            ) -> tuple[DataFrame, list[Check]]:
    """Segment migration and every drift check from ``before`` to ``after``.

    PSI for R, F, M, the model features kept in gold/rfm_segments and (when both dates were
    scored) the predicted spend; each segment's change in share; the clusters' adjusted Rand
    index on the customers present at both dates.
    """
    d = cfg["drift"]
    a = rfm.where(F.col("as_of") == F.lit(before))
    b = rfm.where(F.col("as_of") == F.lit(after))
    checks: list[Check] = []

    def add_psi(x: DataFrame, y: DataFrame, column: str, kind: str) -> None:
        value = psi(x, y, column, d["psi_bins"])
        checks.append(Check(f"psi {column}", kind, value, d["psi_threshold"],
                            value >= d["psi_threshold"]))

    for column in RFM_FEATURES:
        add_psi(a, b, column, "rfm")
    for column in MODEL_FEATURES:
        if column in rfm.columns:
            add_psi(a, b, column, "model_feature")
    if predictions is not None:
        pa = predictions.where(F.col("as_of") == F.lit(before))
        pb = predictions.where(F.col("as_of") == F.lit(after))
        if pa.limit(1).count() and pb.limit(1).count():
            add_psi(pa, pb, "predicted_spend", "prediction")
    # one row per segment
    for r in segment_shares(rfm, before, after).orderBy("segment").collect():
        checks.append(Check(f"share {r['segment']}", "segment_share", r["share_change"],
                            d["share_change_threshold"],
                            abs(r["share_change"]) >= d["share_change_threshold"]))
    if clusters is not None:
        ari = cluster_stability(clusters, before, after)
        checks.append(Check("cluster ari", "cluster_stability", ari, d["min_cluster_ari"],
                            ari is not None and ari < d["min_cluster_ari"]))
    return segment_migration(rfm, before, after), checks
