"""Customer value: features before a date, spend in the horizon after it, baselines and models.

Everything here is DataFrame in, DataFrame out. Only aggregates reach the driver: the
probabilistic models are fitted on customers collapsed by (repeat purchases, recency, age), and
their predictions are joined back by that key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, OneVsRest
from pyspark.ml.feature import Bucketizer, SQLTransformer, StringIndexer, VectorAssembler
from pyspark.ml.regression import GBTRegressor
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg import btyd
from custseg.config import Config
from custseg.quantiles import even_cuts
from custseg.rfm import customer_features

TIERS = ("Low", "Mid", "High")
BASE_FEATURES = (
    "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "distinct_products", "days_between_purchases", "return_rate", "repeat_purchases",
    "repeat_span_days", "bgnbd_purchases", "bgnbd_p_alive", "paretonbd_purchases",
    "paretonbd_p_alive", "gg_spend_per_purchase", "bgnbd_gg", "paretonbd_gg", "past_spend_rate",
)
BASELINES = ("past_spend_rate", "seed_formula", "bgnbd_gg", "paretonbd_gg")
_KEY = ["repeat_purchases", "repeat_span_days", "age_days"]
# Mean repeat spend is binned at 0.1% on the log scale for the Gamma-Gamma fit.
_SPEND_BINS_PER_LOG_UNIT = 1000.0


@dataclass(frozen=True)
class BtydFits:
    """The probabilistic fits behind one date's features."""

    bgnbd: btyd.Fit
    paretonbd: btyd.Fit
    gammagamma: btyd.Fit
    population_spend: float


def _before(df: DataFrame, day: dt.date) -> DataFrame:
    return df.where((F.col("invoice_date") < F.lit(day).cast("timestamp"))
                    & F.col("customer_id").isNotNull())


def purchase_summary(fact: DataFrame, as_of: dt.date) -> DataFrame:
    """Per customer: repeat purchase days x, days first to last t_x, age T, mean repeat spend.

    A purchase occasion is a day with an invoice, as in the BG/NBD literature; the mean repeat
    spend excludes the first day, which the Gamma-Gamma model leaves out.
    """
    days = (_before(fact, as_of)
            .groupBy("customer_id", F.to_date("invoice_date").alias("day"))
            .agg(F.sum("total_price").alias("spend")))
    per = days.groupBy("customer_id").agg(
        (F.count("*") - 1).alias("repeat_purchases"),
        F.datediff(F.max("day"), F.min("day")).alias("repeat_span_days"),
        F.datediff(F.lit(as_of), F.min("day")).alias("age_days"),
        F.sum("spend").alias("_total"),
        F.min_by("spend", "day").alias("_first"))
    return per.select(
        "customer_id", *_KEY,
        F.when(F.col("repeat_purchases") > 0,
               (F.col("_total") - F.col("_first")) / F.col("repeat_purchases"))
        .alias("repeat_spend"))


def fit_btyd(summary: DataFrame) -> tuple[BtydFits, DataFrame]:
    """Fit BG/NBD, Pareto/NBD and Gamma-Gamma on aggregates of ``summary``.

    Returns the fits and one row per distinct (x, t_x, T) with its customer count, as pandas.
    """
    # One row per distinct (x, t_x, T) in days, not per customer: bounded by the history's
    # length, not the customer count. Sorted so that reruns sum in the same order.
    keys = summary.groupBy(*_KEY).count().toPandas().sort_values(_KEY, ignore_index=True)
    x, t_x, age, n = (keys[c].to_numpy(float) for c in (*_KEY, "count"))
    fits = {m: btyd.fit_purchases(m, x, t_x, age, n) for m in btyd.PURCHASE_MODELS}
    spend = (summary.where((F.col("repeat_purchases") > 0) & (F.col("repeat_spend") > 0))
             .groupBy("repeat_purchases",
                      F.round(F.log("repeat_spend") * _SPEND_BINS_PER_LOG_UNIT).alias("bin"))
             .count().toPandas().sort_values(["repeat_purchases", "bin"], ignore_index=True))
    if spend.empty:
        gg = btyd.Fit("gammagamma", {"p": 1.0, "q": 2.0, "v": 1.0}, 0.0, 0.0, 0, False)
        population = 0.0
    else:
        m = np.exp(spend["bin"].to_numpy(float) / _SPEND_BINS_PER_LOG_UNIT)
        gg = btyd.fit_gammagamma(spend["repeat_purchases"].to_numpy(float), m,
                                 spend["count"].to_numpy(float))
        p, q, v = gg.values()
        population = (p * v / (q - 1.0) if q > 1.0
                      else float(np.average(m, weights=spend["count"])))
    return BtydFits(fits["bgnbd"], fits["paretonbd"], gg, population), keys


def btyd_features(spark: SparkSession, summary: DataFrame, horizon_days: int,
                  cached: list[DataFrame] | None = None) -> tuple[DataFrame, BtydFits]:
    """``summary`` plus expected purchases in the horizon and P(alive) under both purchase
    models, the Gamma-Gamma expected spend per purchase, and the two probabilistic spends.

    ``summary`` is read three times (two fits' aggregates and the join); given ``cached``, it
    is cached and added to that list, for the caller to unpersist once it has used the result.
    """
    if cached is not None:
        summary = summary.persist()
        cached.append(summary)
    fits, keys = fit_btyd(summary)
    x, t_x, age = (keys[c].to_numpy(float) for c in _KEY)
    out = keys[_KEY].copy()
    with np.errstate(all="ignore"):
        out["bgnbd_purchases"] = btyd.bgnbd_expected(fits.bgnbd.values(), horizon_days,
                                                     x, t_x, age)
        out["bgnbd_p_alive"] = btyd.bgnbd_p_alive(fits.bgnbd.values(), x, t_x, age)
        out["paretonbd_purchases"] = btyd.paretonbd_expected(fits.paretonbd.values(),
                                                             horizon_days, x, t_x, age)
        out["paretonbd_p_alive"] = btyd.paretonbd_p_alive(fits.paretonbd.values(), x, t_x, age)
    for model in btyd.PURCHASE_MODELS:
        if not getattr(fits, model).dropout_identified:
            out[f"{model}_p_alive"] = 1.0  # not 1 - noise the trees could split on
    values = out.columns[3:]
    out[values] = out[values].astype(float).where(np.isfinite(out[values].astype(float)), 0.0)
    schema = ", ".join([f"{k} int" for k in _KEY] + [f"{c} double" for c in values])
    predicted = spark.createDataFrame(out, schema)
    p, q, v = fits.gammagamma.values()
    x_col = F.col("repeat_purchases").cast("double")
    gg = F.when(x_col > 0, F.lit(p) * (F.lit(v) + x_col * F.col("repeat_spend"))
                / (F.lit(p) * x_col + F.lit(q) - 1.0)).otherwise(F.lit(fits.population_spend))
    joined = (summary.join(predicted, _KEY, "left")
              .withColumn("gg_spend_per_purchase", gg)
              .withColumn("bgnbd_gg", F.col("bgnbd_purchases") * F.col("gg_spend_per_purchase"))
              .withColumn("paretonbd_gg",
                          F.col("paretonbd_purchases") * F.col("gg_spend_per_purchase")))
    return joined, fits


def spend_in(fact: DataFrame, start: dt.date, horizon_days: int) -> DataFrame:
    """Each identified customer's spend in [start, start + horizon)."""
    end = start + dt.timedelta(days=horizon_days)
    window = ((F.col("invoice_date") >= F.lit(start).cast("timestamp"))
              & (F.col("invoice_date") < F.lit(end).cast("timestamp"))
              & F.col("customer_id").isNotNull())
    return (fact.where(window).groupBy("customer_id")
            .agg(F.sum("total_price").alias("actual_spend")))


def tier_of(spend: Column, cuts: dict) -> Column:
    """Low below ``cuts['mid']`` (no spend included), High from ``cuts['high']``, else Mid."""
    return (F.when(spend >= F.lit(float(cuts["high"])), F.lit("High"))
            .when(spend >= F.lit(float(cuts["mid"])), F.lit("Mid"))
            .otherwise(F.lit("Low")))


def features_at(spark: SparkSession, fact: DataFrame, cancellations: DataFrame,
                as_of: dt.date, cfg: Config, cached: list[DataFrame] | None = None
                ) -> tuple[DataFrame, BtydFits]:
    """Model features per customer from transactions strictly before ``as_of``, plus the
    baseline predictions for the horizon that starts there (``cached``: see btyd_features)."""
    horizon = cfg["clv"]["horizon_days"]
    rfm = customer_features(fact, cancellations, as_of, cfg["segment"]["windows_days"])
    summary, fits = btyd_features(spark, purchase_summary(fact, as_of), horizon, cached)
    joined = rfm.join(summary, "customer_id")
    return with_simple_baselines(joined, horizon), fits


def with_simple_baselines(features: DataFrame, horizon_days: int) -> DataFrame:
    """Add ``past_spend_rate`` and ``seed_formula`` (both spend in the horizon).

    past_spend_rate: spend per day over the customer's tenure (at least one horizon) times the
    horizon. seed_formula: average order value x purchase frequency x expected lifespan, with
    the population's orders per customer-day, and the lifespan 1 / churn (churn = 1 - the share
    of customers who bought more than once) in units of the observed period, capped at the
    horizon.
    """
    h = F.lit(float(horizon_days))
    population = features.agg(
        (F.sum("frequency") / F.count("*")).alias("_orders_per_customer"),
        F.greatest(F.max("tenure_days"), F.lit(1)).cast("double").alias("_period_days"),
        F.avg((F.col("frequency") > 1).cast("double")).alias("_repeat_rate"))
    lifespan_days = F.when(F.col("_repeat_rate") < 1.0,
                           F.col("_period_days") / (F.lit(1.0) - F.col("_repeat_rate")))
    per_day = F.col("_orders_per_customer") / F.col("_period_days")
    seed = F.col("avg_order_value") * per_day * F.least(F.coalesce(lifespan_days, h), h)
    return (features.crossJoin(F.broadcast(population))
            .withColumn("past_spend_rate",
                        F.col("monetary") / F.greatest(F.col("tenure_days").cast("double"), h) * h)
            .withColumn("seed_formula", seed)
            .drop("_orders_per_customer", "_period_days", "_repeat_rate"))


def examples(spark: SparkSession, fact: DataFrame, cancellations: DataFrame,
             cutoff: dt.date, cfg: Config, cached: list[DataFrame] | None = None
             ) -> tuple[DataFrame, BtydFits]:
    """Features before ``cutoff`` and the spend and tier in the horizon after it (0 and Low
    for customers who buy nothing; ``cached``: see btyd_features)."""
    clv = cfg["clv"]
    feats, fits = features_at(spark, fact, cancellations, cutoff, cfg, cached)
    label = spend_in(fact, cutoff, clv["horizon_days"])
    out = (feats.join(label, "customer_id", "left")
           .withColumn("actual_spend", F.coalesce(F.col("actual_spend"), F.lit(0.0))))
    return out.withColumn("actual_tier", tier_of(F.col("actual_spend"), clv["tier_cuts"])), fits


def _prepare(features: list[str]) -> list:
    filled = ", ".join(f"coalesce(CAST({c} AS DOUBLE), -1D) AS f_{c}" for c in features)
    return [
        SQLTransformer(statement=f"SELECT *, {filled} FROM __THIS__"),
        StringIndexer(inputCol="country", outputCol="country_index", handleInvalid="keep",
                      stringOrderType="frequencyDesc"),
        VectorAssembler(inputCols=[f"f_{c}" for c in features] + ["country_index"],
                        outputCol="features"),
    ]


def _gbt_params(cfg: Config, max_bins: int) -> dict:
    g = cfg["clv"]["gbt"]
    return {"maxIter": g["max_iter"], "maxDepth": g["max_depth"], "stepSize": g["step_size"],
            "minInstancesPerNode": g["min_instances_per_node"], "seed": g["seed"],
            "maxBins": max_bins, "featuresCol": "features"}


def fit_input(train: DataFrame) -> DataFrame:
    """Training rows in a fixed order and few partitions: tree fits sample their split
    candidates by position, so the same rows must arrive the same way for the same model, and
    small partitions cost a task per partition in each of the many boosting jobs."""
    spark = train.sparkSession
    rows = train.count()
    parts = max(1, min(spark.sparkContext.defaultParallelism, rows // 50_000 + 1))
    return train.repartition(parts, "customer_id").sortWithinPartitions("customer_id", "as_of")


def max_bins(train: DataFrame) -> int:
    """Bins enough for every country seen in training (plus the unseen bucket)."""
    countries = train.agg(F.countDistinct("country")).first()[0]
    return max(32, countries + 2)


def isotonic(ys: list[float], weights: list[float]) -> list[float]:
    """Pool adjacent violators: the closest non-decreasing sequence (weighted least squares)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for y, w in zip(ys, weights, strict=True):
        blocks.append([y, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            y2, w2, n2 = blocks.pop()
            y1, w1, n1 = blocks.pop()
            blocks.append([(y1 * w1 + y2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [b[0] for b in blocks for _ in range(int(b[2]))]


def calibration_sql(knots: list[tuple[float, float]]) -> str:
    """Spend from the GBT's log prediction: linear between (log prediction, mean spend) knots,
    proportional to exp(log prediction) beyond the first and last, and a vanishing slope
    added so that ties on a flat stretch keep the model's order."""
    lp = "log_prediction"
    (x0, y0), (xn, yn) = knots[0], knots[-1]
    cases = [f"WHEN {lp} <= {x0!r} THEN {y0!r} * exp({lp} - {x0!r})"]
    for (xa, ya), (xb, yb) in zip(knots, knots[1:], strict=False):
        slope = (yb - ya) / (xb - xa) if xb > xa else 0.0
        cases.append(f"WHEN {lp} <= {xb!r} THEN {ya!r} + ({lp} - {xa!r}) * {slope!r}")
    cases.append(f"ELSE {yn!r} * exp({lp} - {xn!r})")
    return (f"SELECT *, greatest(CASE {' '.join(cases)} END + 1e-9 * {lp}, 0D) "
            "AS predicted_spend FROM __THIS__")


def fit_spend_model(train: DataFrame, cfg: Config, bins: int, knots: int = 20) -> PipelineModel:
    """GBT on log1p(spend) for the heavy tail, then calibrated to spend: the training
    predictions are cut into ``knots`` quantile buckets and each bucket's mean actual spend
    (made non-decreasing) is a knot of a monotone map, so the ranking is the GBT's and the
    level per bucket is the spend actually seen (a log model alone predicts the median)."""
    features = list(BASE_FEATURES)
    data = train.withColumn("log_spend", F.log1p("actual_spend"))
    pipe = Pipeline(stages=[*_prepare(features), GBTRegressor(
        labelCol="log_spend", predictionCol="log_prediction", **_gbt_params(cfg, bins))])
    fitted = pipe.fit(data)
    scored = fitted.transform(data).select("log_prediction", "actual_spend")
    cuts = scored.agg(even_cuts(F.col("log_prediction"), knots, 10_000)).first()[0]
    bucketed = Bucketizer(splits=[float("-inf"), *sorted(set(cuts)), float("inf")],
                          inputCol="log_prediction", outputCol="_knot").transform(scored)
    rows = sorted(bucketed.groupBy("_knot").agg(
        F.avg("log_prediction").alias("x"), F.avg("actual_spend").alias("y"),
        F.count("*").alias("n")).collect(), key=lambda r: r["x"])  # at most ``knots`` rows
    ys = isotonic([r["y"] for r in rows], [float(r["n"]) for r in rows])
    back = SQLTransformer(statement=calibration_sql(
        [(float(r["x"]), float(y)) for r, y in zip(rows, ys, strict=True)]))
    return PipelineModel(stages=[*fitted.stages, back])


def fit_tier_model(train: DataFrame, cfg: Config, bins: int) -> PipelineModel:
    """One-vs-rest GBT classifiers (MLlib's GBT is binary) for Low / Mid / High."""
    features = list(BASE_FEATURES)
    index = F.when(F.col("actual_tier") == "Low", 0.0).when(
        F.col("actual_tier") == "Mid", 1.0).otherwise(2.0)
    data = train.withColumn("tier_index", index)
    gbt = GBTClassifier(labelCol="tier_index", **_gbt_params(cfg, bins))
    ovr = OneVsRest(classifier=gbt, labelCol="tier_index", featuresCol="features",
                    predictionCol="tier_prediction")
    back = SQLTransformer(statement=(
        "SELECT *, CASE CAST(tier_prediction AS INT) WHEN 0 THEN 'Low' WHEN 1 THEN 'Mid' "
        "ELSE 'High' END AS predicted_tier FROM __THIS__"))
    return Pipeline(stages=[*_prepare(features), ovr, back]).fit(data)
