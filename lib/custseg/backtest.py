"""Backtest metrics for predicted spend and tiers, computed without pulling customers.

Error metrics are aggregates. Rank metrics come from at most ``buckets`` rows: predictions are
cut at ``percentile_approx`` quantiles and customers in one bucket count as tied, so ties (many
customers predicted 0) are averaged rather than ordered arbitrarily. With fewer distinct
predictions than buckets every distinct value is its own bucket and the figures are exact.
Spearman's correlation is MLlib's (ranks by a distributed sort, ties averaged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.ml.feature import Bucketizer, VectorAssembler
from pyspark.ml.stat import Correlation
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.clv import TIERS
from custseg.quantiles import even_cuts

BUCKETS = 1000


@dataclass
class SpendMetrics:
    """Spend error and ranking figures for one model."""

    customers: int
    rmse: float
    mae: float
    spearman: float | None
    normalised_gini: float | None
    top_decile_share: float | None
    deciles: list[dict] = field(default_factory=list)


@dataclass
class TierMetrics:
    """Tier accuracy, macro-F1 and the confusion counts (actual, predicted) -> n."""

    accuracy: float
    macro_f1: float
    confusion: dict[tuple[str, str], int]


def _buckets(df: DataFrame, score: str, actual: str, predicted: str, buckets: int
             ) -> list[tuple[int, float, float]]:
    """(customers, sum actual, sum predicted) per score bucket, highest score first."""
    cuts = df.agg(even_cuts(F.col(score).cast("double"), buckets, 10 * buckets)).first()[0]
    splits = [float("-inf"), *sorted(set(cuts)), float("inf")]
    bucketed = Bucketizer(splits=splits, inputCol="_score", outputCol="_bucket",
                          handleInvalid="keep").transform(
        df.withColumn("_score", F.col(score).cast("double")))
    rows = (bucketed.groupBy("_bucket")
            .agg(F.count("*").alias("n"), F.sum(actual).alias("a"), F.sum(predicted).alias("p"))
            .collect())  # at most ``buckets`` rows
    return [(r["n"], float(r["a"] or 0.0), float(r["p"] or 0.0))
            for r in sorted(rows, key=lambda r: -r["_bucket"])]


def lorenz(rows: list[tuple[int, float, float]]) -> tuple[float, float]:
    """(Gini, share of actual captured by the top 10%) for buckets sorted best first, customers
    inside a bucket spread evenly (ties averaged)."""
    total_n = sum(r[0] for r in rows)
    total_a = sum(r[1] for r in rows)
    if total_n == 0 or total_a == 0:
        return 0.0, 0.0
    area, captured, seen, top = 0.0, 0.0, 0.0, None
    for n, a, _ in rows:
        area += n / total_n * (captured + a / total_a / 2.0)
        if top is None and seen + n / total_n >= 0.1:
            top = captured + (0.1 - seen) / (n / total_n) * a / total_a
        captured += a / total_a
        seen += n / total_n
    return 2.0 * area - 1.0, top if top is not None else 1.0


def _deciles(rows: list[tuple[int, float, float]]) -> list[dict]:
    total = sum(r[0] for r in rows)
    out: dict[int, list[float]] = {}
    seen = 0
    for n, a, p in rows:
        decile = min(10, int((seen + n / 2.0) / total * 10) + 1)
        acc = out.setdefault(decile, [0, 0.0, 0.0])
        acc[0] += n
        acc[1] += a
        acc[2] += p
        seen += n
    return [{"decile": d, "customers": int(v[0]), "mean_predicted": v[2] / v[0],
             "mean_actual": v[1] / v[0]} for d, v in sorted(out.items())]


def spend_metrics(df: DataFrame, predicted: str, actual: str = "actual_spend",
                  buckets: int = BUCKETS) -> SpendMetrics:
    """RMSE, MAE, Spearman, normalised Gini, top-decile revenue share and the decile table."""
    scored = df.select(F.col(predicted).cast("double").alias("p"),
                       F.col(actual).cast("double").alias("a")).na.fill(0.0)
    row = scored.agg(F.count("*").alias("n"),
                     F.sqrt(F.avg((F.col("p") - F.col("a")) ** 2)).alias("rmse"),
                     F.avg(F.abs(F.col("p") - F.col("a"))).alias("mae"),
                     F.stddev_pop("p").alias("sd_p"), F.stddev_pop("a").alias("sd_a")).first()
    if row["n"] == 0:
        return SpendMetrics(0, float("nan"), float("nan"), None, None, None)
    by_prediction = _buckets(scored, "p", "a", "p", buckets)
    by_actual = _buckets(scored, "a", "a", "p", buckets)
    gini, top = lorenz(by_prediction)
    best, _ = lorenz(by_actual)
    spearman = None
    if row["sd_p"] and row["sd_a"]:
        vec = VectorAssembler(inputCols=["p", "a"], outputCol="v").transform(scored)
        spearman = float(Correlation.corr(vec, "v", "spearman").first()[0][0, 1])
    return SpendMetrics(
        customers=row["n"], rmse=row["rmse"], mae=row["mae"], spearman=spearman,
        normalised_gini=gini / best if best > 0 else None, top_decile_share=top,
        deciles=_deciles(by_prediction))


def tier_metrics(df: DataFrame, predicted: str, actual: str = "actual_tier") -> TierMetrics:
    """Accuracy, macro-F1 over the tiers that occur (actual or predicted), confusion counts."""
    counts = {(r[actual], r[predicted]): r["count"]
              for r in df.groupBy(actual, predicted).count().collect()}  # at most 9 rows
    total = sum(counts.values())
    correct = sum(n for (a, p), n in counts.items() if a == p)
    f1s = []
    for tier in TIERS:
        tp = counts.get((tier, tier), 0)
        support = sum(n for (a, _), n in counts.items() if a == tier)
        chosen = sum(n for (_, p), n in counts.items() if p == tier)
        if support == 0 and chosen == 0:
            continue
        f1s.append(2.0 * tp / (support + chosen))
    return TierMetrics(accuracy=correct / total if total else float("nan"),
                       macro_f1=sum(f1s) / len(f1s) if f1s else float("nan"),
                       confusion=counts)
