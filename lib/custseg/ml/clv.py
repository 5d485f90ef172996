"""Customer value: features before a date, spend in the horizon after it, and the baselines.

Everything here is DataFrame in, DataFrame out. Only aggregates reach the driver: the
probabilistic models are fitted on customers collapsed by (repeat purchases, recency, age), and
their predictions are joined back by that key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.io.arrow import from_pandas, from_rows, to_pandas
from custseg.ml import btyd
from custseg.ml.rfm import history_features
from custseg.transforms.history import History, at_dates, dates_frame

TIERS = ("Low", "Mid", "High")
KEY = ["repeat_purchases", "repeat_span_days", "age_days"]
# Features every model family may use; the trailing-window ones are added per configured window.
BASE_FEATURES = (
    "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "distinct_products", "days_between_purchases", "return_rate", "repeat_purchases",
    "repeat_span_days", "max_day_spend", "overdue", "recency_share", "bgnbd_purchases",
    "bgnbd_p_alive", "paretonbd_purchases", "paretonbd_p_alive", "gg_spend_per_purchase",
    "bgnbd_gg", "paretonbd_gg", "past_spend_rate",
)
BASELINES = ("past_spend_rate", "seed_formula", "bgnbd_gg", "paretonbd_gg")
EPOCH = dt.date(1970, 1, 1)
# Mean repeat spend is binned at 0.1% on the log scale for the Gamma-Gamma fit.
_SPEND_BINS_PER_LOG_UNIT = 1000.0


def model_features(cfg: Config) -> list[str]:
    """The feature columns the tree models read: the base set and the trailing windows."""
    windows = [c for w in cfg["segment"]["windows_days"]
               for c in (f"frequency_{w}d", f"monetary_{w}d")]
    return [*BASE_FEATURES, *windows]


@dataclass(frozen=True)
class BtydFits:
    """The probabilistic fits behind one date's features."""

    bgnbd: btyd.Fit
    paretonbd: btyd.Fit
    gammagamma: btyd.Fit
    population_spend: float


def purchase_summary(invoices: DataFrame, dates: DataFrame) -> DataFrame:
    """Per date (``as_of``) and customer: repeat purchase days x, days first to last t_x, age
    T, mean repeat spend, and the largest day's spend, from the invoices before the date.

    A purchase occasion is a day with an invoice, as in the BG/NBD literature; the mean repeat
    spend excludes the first day, which the Gamma-Gamma model leaves out.
    """
    days = (at_dates(invoices, dates)
            .groupBy("as_of", "customer_id", F.to_date("invoice_date").alias("day"))
            .agg(F.sum("total").alias("spend")))
    per = days.groupBy("as_of", "customer_id").agg(
        (F.count("*") - 1).alias("repeat_purchases"),
        F.datediff(F.max("day"), F.min("day")).alias("repeat_span_days"),
        F.datediff(F.col("as_of"), F.min("day")).alias("age_days"),
        F.sum("spend").alias("_total"),
        F.min_by("spend", "day").alias("_first"),
        F.max("spend").alias("max_day_spend"))
    return per.select(
        "as_of", "customer_id", *KEY, "max_day_spend",
        F.when(F.col("repeat_purchases") > 0,
               (F.col("_total") - F.col("_first")) / F.col("repeat_purchases"))
        .alias("repeat_spend"))


def gammagamma_fit(bins: pd.DataFrame) -> tuple[btyd.Fit, float]:
    """Gamma-Gamma on the binned mean repeat spend of one date (``repeat_purchases``, ``bin``,
    ``count``), and the spend per purchase of a customer with no repeat purchase.

    That is the model's population mean p v / (q - 1) when q > 2. At or below 2 the fitted
    spend distribution has no finite variance and its mean rests on the tail alone (on
    generated data a q of 1.003 put it at 12,600 against an observed 148, and every one-time
    buyer at the top of the ranking), so the observed mean is used instead.
    """
    if bins.empty:
        return btyd.Fit("gammagamma", {"p": 1.0, "q": 2.0, "v": 1.0}, 0.0, 0.0, 0, False), 0.0
    m = np.exp(bins["bin"].to_numpy(float) / _SPEND_BINS_PER_LOG_UNIT)
    gg = btyd.fit_gammagamma(bins["repeat_purchases"].to_numpy(float), m,
                             bins["count"].to_numpy(float))
    p, q, v = gg.values()
    population = (p * v / (q - 1.0) if q > 2.0
                  else float(np.average(m, weights=bins["count"])))
    return gg, population


def day_number(date: Column) -> Column:
    """A date as days since 1970-01-01 (``EPOCH``): on the driver an int32, where a date
    column costs a Python object per row."""
    return F.datediff(date, F.lit(EPOCH))


def date_of(day: int) -> dt.date:
    """The date of a ``day_number``."""
    return EPOCH + dt.timedelta(days=int(day))


def fit_btyd(summary: DataFrame) -> tuple[dict[dt.date, BtydFits], pd.DataFrame]:
    """Fit BG/NBD, Pareto/NBD and Gamma-Gamma at each date of ``summary`` on aggregates.

    Returns the fits per date and one row per date (``day``, see ``day_number``) and distinct
    (x, t_x, T) with its customer count, as pandas.
    """
    # One row per distinct (x, t_x, T) in days, not per customer: bounded by the history's
    # length (cubed), not the customer count, though below that bound it grows with the
    # customers (about 700,000 a date at 50x); 24 bytes a row, through Arrow. Sorted so that
    # reruns sum in the same order.
    keys = to_pandas(summary.groupBy(day_number(F.col("as_of")).alias("day"), *KEY).count()
                     ).sort_values(["day", *KEY], ignore_index=True)
    spend = to_pandas(
        summary.where((F.col("repeat_purchases") > 0) & (F.col("repeat_spend") > 0))
        .groupBy(day_number(F.col("as_of")).alias("day"), "repeat_purchases",
                 F.round(F.log("repeat_spend") * _SPEND_BINS_PER_LOG_UNIT).alias("bin"))
        .count()).sort_values(["day", "repeat_purchases", "bin"], ignore_index=True)
    fits = {}
    for day, at in keys.groupby("day"):
        x, t_x, age, n = (at[c].to_numpy(float) for c in (*KEY, "count"))
        purchase = {m: btyd.fit_purchases(m, x, t_x, age, n) for m in btyd.PURCHASE_MODELS}
        gg, population = gammagamma_fit(spend[spend["day"] == day])
        fits[date_of(day)] = BtydFits(
            purchase["bgnbd"], purchase["paretonbd"], gg, population)
    return fits, keys


def purchase_table(spark: SparkSession, keys: pd.DataFrame,
                   fits: dict[dt.date, dict[str, btyd.Fit]], horizon_days: int) -> DataFrame:
    """Expected purchases in the horizon and P(alive) per date and distinct (x, t_x, T) under
    each given purchase model (``{model}_purchases``, ``{model}_p_alive``), as a small
    DataFrame with ``as_of``; ``keys`` has ``day`` (see ``day_number``) and the key columns,
    ``fits`` the models per date.

    Made one date at a time, so that the driver holds one date's table. A model whose dropout
    the data do not identify gets P(alive) 1, not 1 - noise that trees could split on.
    """
    expected = {"bgnbd": btyd.bgnbd_expected, "paretonbd": btyd.paretonbd_expected}
    alive = {"bgnbd": btyd.bgnbd_p_alive, "paretonbd": btyd.paretonbd_p_alive}
    models = list(next(iter(fits.values()))) if fits else []
    values = [f"{m}_{v}" for m in models for v in ("purchases", "p_alive")]
    schema = ", ".join(["day int"] + [f"{k} int" for k in KEY]
                       + [f"{c} double" for c in values])
    parts = []
    for day, at in keys.groupby("day"):
        x, t_x, age = (at[c].to_numpy(float) for c in KEY)
        out = at[["day", *KEY]].copy()
        with np.errstate(all="ignore"):
            for model, fit in fits[date_of(day)].items():
                out[f"{model}_purchases"] = expected[model](fit.values(), horizon_days, x, t_x,
                                                            age)
                out[f"{model}_p_alive"] = (alive[model](fit.values(), x, t_x, age)
                                           if fit.dropout_identified else 1.0)
        numbers = out[values].astype(float)
        out[values] = numbers.where(np.isfinite(numbers), 0.0)
        parts.append(from_pandas(spark, out[["day", *KEY, *values]], schema))
    table = (reduce(DataFrame.unionByName, parts) if parts
             else from_rows(spark, [], schema))
    return table.select(F.date_add(F.lit(EPOCH), F.col("day")).alias("as_of"), *KEY, *values)


def gg_spend(p: Column, q: Column, v: Column, population: Column) -> Column:
    """E[spend per purchase | x, mean repeat spend] under Gamma-Gamma; the population mean
    where there is no repeat purchase."""
    x = F.col("repeat_purchases").cast("double")
    return F.when(x > 0, p * (v + x * F.col("repeat_spend")) / (p * x + q - 1.0)
                  ).otherwise(population)


def btyd_features(spark: SparkSession, summary: DataFrame, horizon_days: int,
                  cached: list[DataFrame] | None = None
                  ) -> tuple[DataFrame, dict[dt.date, BtydFits]]:
    """``summary`` plus expected purchases in the horizon and P(alive) under both purchase
    models, the Gamma-Gamma expected spend per purchase, and the two probabilistic spends,
    each from the models fitted at the row's date.

    ``summary`` is read three times (two fits' aggregates and the join); given ``cached``, it
    is cached and added to that list, for the caller to unpersist once it has used the result.
    """
    if cached is not None:
        summary = summary.persist()
        cached.append(summary)
    fits, keys = fit_btyd(summary)
    predicted = purchase_table(
        spark, keys, {d: {"bgnbd": f.bgnbd, "paretonbd": f.paretonbd} for d, f in fits.items()},
        horizon_days)
    spend = from_rows(
        spark, [(d, *f.gammagamma.values(), float(f.population_spend)) for d, f in fits.items()],
        "as_of date, _p double, _q double, _v double, _population double")
    gg = gg_spend(F.col("_p"), F.col("_q"), F.col("_v"), F.col("_population"))
    joined = (summary.join(F.broadcast(predicted), ["as_of", *KEY], "left")
              .join(F.broadcast(spend), "as_of", "left")
              .withColumn("gg_spend_per_purchase", gg)
              .withColumn("bgnbd_gg", F.col("bgnbd_purchases") * F.col("gg_spend_per_purchase"))
              .withColumn("paretonbd_gg",
                          F.col("paretonbd_purchases") * F.col("gg_spend_per_purchase"))
              .drop("_p", "_q", "_v", "_population"))
    return joined, fits


def spend_in(invoices: DataFrame, dates: DataFrame, horizon_days: int) -> DataFrame:
    """Per date (``as_of``) and customer: spend and purchase days in [as_of, as_of + horizon)."""
    start = F.col("as_of").cast("timestamp")
    end = F.date_add(F.col("as_of"), horizon_days).cast("timestamp")
    window = (invoices.crossJoin(F.broadcast(dates))
              .where((F.col("invoice_date") >= start) & (F.col("invoice_date") < end)))
    return (window.groupBy("as_of", "customer_id")
            .agg(F.sum("total").alias("actual_spend"),
                 F.countDistinct(F.to_date("invoice_date")).alias("actual_purchases")))


def tier_of(spend: Column, cuts: dict) -> Column:
    """Low below ``cuts['mid']`` (no spend included), High from ``cuts['high']``, else Mid."""
    return (F.when(spend >= F.lit(float(cuts["high"])), F.lit("High"))
            .when(spend >= F.lit(float(cuts["mid"])), F.lit("Mid"))
            .otherwise(F.lit("Low")))


def features_at(spark: SparkSession, history: History, days: list[dt.date], cfg: Config,
                cached: list[DataFrame] | None = None
                ) -> tuple[DataFrame, dict[dt.date, BtydFits]]:
    """Model features per date of ``days`` and customer from the history strictly before the
    date, plus the baseline predictions for the horizon that starts there, in one query
    (``cached``: see btyd_features).

    Beside the RFM features and the BTYD outputs: ``overdue`` (days since the last order over
    the mean gap between orders) and ``recency_share`` (recency over tenure), which read the
    same at any cutoff, so a model trained on earlier cutoffs applies to later ones.
    """
    horizon = cfg["clv"]["horizon_days"]
    rfm = history_features(history, days, cfg["segment"]["windows_days"])
    summary, fits = btyd_features(
        spark, purchase_summary(history.invoices, dates_frame(spark, days)), horizon, cached)
    joined = (rfm.join(summary, ["as_of", "customer_id"])
              .withColumn("overdue", F.try_divide(F.col("recency_days"),
                                                  F.col("days_between_purchases")))
              .withColumn("recency_share", F.col("recency_days")
                          / F.greatest(F.col("tenure_days"), F.lit(1)).cast("double")))
    return with_simple_baselines(joined, horizon), fits


def with_simple_baselines(features: DataFrame, horizon_days: int) -> DataFrame:
    """Add ``past_spend_rate`` and ``seed_formula`` (both spend in the horizon).

    past_spend_rate: spend per day over the customer's tenure (at least one horizon) times the
    horizon. seed_formula: average order value x purchase frequency x expected lifespan, with
    the population's orders per customer-day at the row's date, and the lifespan 1 / churn
    (churn = 1 - the share of customers who bought more than once) in units of the observed
    period, capped at the horizon.
    """
    h = F.lit(float(horizon_days))
    population = features.groupBy("as_of").agg(
        (F.sum("frequency") / F.count("*")).alias("_orders_per_customer"),
        F.greatest(F.max("tenure_days"), F.lit(1)).cast("double").alias("_period_days"),
        F.avg((F.col("frequency") > 1).cast("double")).alias("_repeat_rate"))
    lifespan_days = F.when(F.col("_repeat_rate") < 1.0,
                           F.col("_period_days") / (F.lit(1.0) - F.col("_repeat_rate")))
    per_day = F.col("_orders_per_customer") / F.col("_period_days")
    seed = F.col("avg_order_value") * per_day * F.least(F.coalesce(lifespan_days, h), h)
    return (features.join(F.broadcast(population), "as_of")
            .withColumn("past_spend_rate",
                        F.col("monetary") / F.greatest(F.col("tenure_days").cast("double"), h) * h)
            .withColumn("seed_formula", seed)
            .drop("_orders_per_customer", "_period_days", "_repeat_rate"))


def examples(spark: SparkSession, history: History, days: list[dt.date], cfg: Config,
             cached: list[DataFrame] | None = None
             ) -> tuple[DataFrame, dict[dt.date, BtydFits]]:
    """Features before each date of ``days`` and the spend, purchase days and tier in the
    horizon after it (0 and Low for customers who buy nothing; ``cached``: see
    btyd_features)."""
    clv = cfg["clv"]
    feats, fits = features_at(spark, history, days, cfg, cached)
    label = spend_in(history.invoices, dates_frame(spark, days), clv["horizon_days"])
    out = (feats.join(label, ["as_of", "customer_id"], "left")
           .withColumn("actual_spend", F.coalesce(F.col("actual_spend"), F.lit(0.0)))
           .withColumn("actual_purchases", F.coalesce(F.col("actual_purchases"), F.lit(0))))
    return out.withColumn("actual_tier", tier_of(F.col("actual_spend"), clv["tier_cuts"])), fits
