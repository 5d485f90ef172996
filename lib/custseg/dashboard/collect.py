"""The dashboard's figures, computed by Spark from the gold tables.

Only aggregates (a few hundred rows at most), a seeded sample for the cluster scatter and the
top-N retention list reach the driver, as plain dicts and dataclasses for ``render``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.catalog import (
    CLUSTER_PROFILES,
    CLUSTER_SELECTION,
    CLV_PREDICTIONS,
    CUSTOMER_CLUSTERS,
    FACT,
    QUARANTINE,
    REFINE_LOG,
    RFM_SEGMENTS,
)
from custseg.ml import drift
from custseg.runtime.threads import run_all
from custseg.transforms import insights

# Every table the page reads (``_table`` reads no other): the dashboard stage writes the page
# again only when one of them has a new version.
INPUTS: tuple[tuple[str, str], ...] = (
    ("silver", FACT), ("silver", QUARANTINE), ("silver", REFINE_LOG),
    ("gold", "report_transactions"), ("gold", "report_customers"),
    ("gold", "report_year_invoices"), ("gold", "report_product_invoices"),
    ("gold", "country_activity"), ("gold", "purchase_nature"), ("gold", RFM_SEGMENTS),
    ("gold", CUSTOMER_CLUSTERS), ("gold", CLUSTER_PROFILES), ("gold", CLUSTER_SELECTION),
    ("gold", CLV_PREDICTIONS), ("gold", "clv_backtest"), ("gold", "clv_backtest_deciles"),
    ("gold", "clv_calibration"), ("gold", "drift_report"), ("gold", "segment_migration"),
    ("gold", "audiences"))
TOP_SHARE = 0.2
SPEND_BANDS = [0.0, 1.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, math.inf]
TIER_ORDER = ("Low", "Mid", "High")


@dataclass
class Kpis:
    """The headline numbers, as the gold tables give them."""

    customers: int
    revenue: float
    orders: int
    average_order_value: float
    top20_share: float


@dataclass
class Page:
    """Everything the page shows, already aggregated."""

    kpis: Kpis
    generated: str
    root: str
    sections: dict[str, Any] = field(default_factory=dict)


def _table(spark: SparkSession, root: str, layer: str, name: str) -> DataFrame | None:
    if (layer, name) not in INPUTS:  # a page read from an undeclared table could go stale
        raise ValueError(f"{layer}/{name} is not among the dashboard's INPUTS")
    path = lakehouse.table_path(root, layer, name)
    return lakehouse.read(spark, path) if lakehouse.exists(spark, path) else None


class _Held:
    """DataFrames a section queries several times, cached until ``collect`` ends. Every query
    of a Delta table first runs a Spark job that lists the table's files; queries of a cached
    DataFrame read the cache instead. Only a date's rows or a small table are held, never a
    whole customer-level history."""

    def __init__(self) -> None:
        self._held: list[DataFrame] = []

    def keep(self, df: DataFrame) -> DataFrame:
        """``df``, cached (filled by its first query)."""
        df = df.persist()
        self._held.append(df)
        return df

    def release(self) -> None:
        """Unpersist every DataFrame kept."""
        for df in self._held:
            df.unpersist()


def _rows(df: DataFrame) -> list[dict]:
    """Rows of a small result: callers pass aggregates, limits or the bounded scatter sample."""
    return [r.asDict() for r in df.collect()]


def kpis(transactions: DataFrame, customers: DataFrame) -> Kpis:
    """Customers (identified), revenue and orders (all invoices), AOV, and the share of the
    identified customers' revenue that comes from the top 20% of them (those above the 80th
    percentile of total purchase)."""
    t = transactions.agg(F.count("*").alias("orders"),
                         F.sum("sales").alias("revenue")).first()
    c = customers.agg(F.count("*").alias("n"), F.sum("total_purchase").alias("total"),
                      F.percentile_approx("total_purchase", 1 - TOP_SHARE, 1_000_000)
                      .alias("cut")).first()
    top = customers.where(F.col("total_purchase") > F.lit(c["cut"])).agg(
        F.sum("total_purchase").alias("s")).first()["s"] or 0.0
    revenue = float(t["revenue"] or 0.0)
    return Kpis(customers=int(c["n"]), revenue=revenue, orders=int(t["orders"]),
                average_order_value=revenue / t["orders"] if t["orders"] else 0.0,
                top20_share=top / c["total"] if c["total"] else 0.0)


def _latest(df: DataFrame) -> dt.date | None:
    return df.agg(F.max("as_of")).first()[0]


def partial_months(first: dt.datetime, last: dt.datetime) -> dict[str, str]:
    """"yyyy-mm" -> what the data covers of it, for the first and last months when the
    invoices start after the 1st or end before the month's last day (UCI ends on 9 December
    2011, which would otherwise read as a collapse)."""
    out: dict[str, str] = {}
    if first.day > 1:
        out[f"{first:%Y-%m}"] = f"from {first.day} {first:%b}"
    if (last.date() + dt.timedelta(days=1)).month == last.month:
        key = f"{last:%Y-%m}"
        out[key] = (f"{first.day}-{last.day} {last:%b}" if key in out
                    else f"to {last.day} {last:%b}")
    return out


def _sales(spark: SparkSession, root: str, cfg: Config) -> dict:
    dash = cfg["dashboard"]
    out: dict[str, Any] = {}
    months = _table(spark, root, "gold", "report_year_invoices")
    if months is not None:
        out["months"] = _rows(months.orderBy("year", "month"))
        fact = _table(spark, root, "silver", FACT)
        if fact is not None:
            span = fact.agg(F.min("invoice_date"), F.max("invoice_date")).first()
            out["partial"] = partial_months(span[0], span[1]) if span[0] else {}
    activity = _table(spark, root, "gold", "country_activity")
    if activity is not None:
        out["countries"] = _rows(activity.orderBy(F.desc("revenue"), "country")
                                 .limit(dash["top_countries"]))
    products = _table(spark, root, "gold", "report_product_invoices")
    if products is not None:
        out["products"] = _rows(products.where(~F.coalesce("is_non_product", F.lit(False)))
                                .orderBy(F.desc("revenue"), "stock_code")
                                .limit(dash["top_products"]))
    nature = _table(spark, root, "gold", "purchase_nature")
    if nature is not None:
        out["nature"] = _rows(nature.orderBy("class_order"))
    return out


def _segments(rfm: DataFrame, as_of: dt.date,
              predicted: tuple[DataFrame, dt.date, int] | None, held: _Held) -> dict:
    now = held.keep(insights.at(rfm, as_of))
    same_day = predicted[0] if predicted is not None and predicted[1] == as_of else None
    total = now.agg(F.sum("monetary")).first()[0] or 1.0
    seg = (now.groupBy("segment").agg(F.count("*").alias("customers"),
                                      F.sum("monetary").alias("revenue"))
           .withColumn("share_revenue", F.col("revenue") / F.lit(total)))
    return {
        "as_of": as_of,
        "segments": _rows(seg.orderBy(F.desc("customers"), "segment")),
        "rf": _rows(now.groupBy("r_score", "f_score").count()),
        "tiers": _rows(now.groupBy("value_tier").agg(F.count("*").alias("customers"),
                                                     F.sum("monetary").alias("revenue"))),
        "profile": _rows(insights.segment_profile(now, same_day)
                         .orderBy(F.desc("share_revenue"))),
    }


def _clusters(spark: SparkSession, root: str, rfm: DataFrame, as_of: dt.date,
              cfg: Config, held: _Held) -> dict:
    out: dict[str, Any] = {}
    profiles = _table(spark, root, "gold", CLUSTER_PROFILES)
    if profiles is not None:
        out["profiles"] = _rows(profiles.where(F.col("as_of") == F.lit(as_of))
                                .orderBy(F.desc("share_revenue")))
    selection = _table(spark, root, "gold", CLUSTER_SELECTION)
    if selection is not None:
        selection = held.keep(selection)
        latest = selection.where(F.col("as_of") <= F.lit(as_of)).agg(F.max("as_of")).first()[0]
        if latest is not None:
            out["selection_as_of"] = latest
            out["selection"] = _rows(selection.where(F.col("as_of") == F.lit(latest))
                                     .orderBy("k"))
    assigned = _table(spark, root, "gold", CUSTOMER_CLUSTERS)
    if assigned is not None:
        joined = held.keep(rfm.where(F.col("as_of") == F.lit(as_of))
                           .join(assigned.where(F.col("as_of") == F.lit(as_of))
                                 .select("customer_id", "cluster", "cluster_name"),
                                 "customer_id"))
        n = joined.count()
        want = cfg["dashboard"]["scatter_sample"]
        fraction = min(1.0, 1.2 * want / n) if n else 1.0
        sample = joined.sample(fraction=fraction, seed=7).limit(want)
        out["scatter"] = _rows(sample.select(
            "cluster", "cluster_name", F.log1p("recency_days").alias("log_r"),
            F.log1p("frequency").alias("log_f"),
            F.log1p(F.greatest("monetary", F.lit(0.0))).alias("log_m")))
        out["scatter_of"] = n
    return out


def _predictions(spark: SparkSession, root: str, cfg: Config, held: _Held
                 ) -> tuple[DataFrame, dt.date, int] | None:
    """gold/clv_predictions at its latest as-of date, for the configured horizon when present
    (else the shortest)."""
    preds = _table(spark, root, "gold", CLV_PREDICTIONS)
    if preds is None:
        return None
    as_of = _latest(preds)
    at = held.keep(preds.where(F.col("as_of") == F.lit(as_of)))
    horizons = sorted(r[0] for r in at.select("horizon_days").distinct().collect())  # a few
    h = cfg["clv"]["horizon_days"] if cfg["clv"]["horizon_days"] in horizons else horizons[0]
    return at.where(F.col("horizon_days") == h), as_of, h


def _value(spark: SparkSession, root: str, rfm: DataFrame, cfg: Config,
           predicted: tuple[DataFrame, dt.date, int] | None, held: _Held) -> dict:
    out: dict[str, Any] = {}
    if predicted is not None:
        at, as_of, h = predicted
        out.update(as_of=as_of, horizon_days=h)
        banded = Bucketizer(splits=[-math.inf, *SPEND_BANDS[1:]], inputCol="predicted_spend",
                            outputCol="band").transform(at)
        out["bands"] = _rows(banded.groupBy("band").agg(
            F.count("*").alias("customers"), F.sum("predicted_spend").alias("spend")))
        out["tiers"] = _rows(at.groupBy("predicted_tier").agg(
            F.count("*").alias("customers"), F.sum("predicted_spend").alias("spend")))
        out["total_predicted"] = at.agg(F.sum("predicted_spend")).first()[0]
        segments = insights.at(rfm, as_of)
        if segments.limit(1).count() == 0:
            segments = insights.at(rfm, _latest(rfm))
        out["retain"] = _rows(insights.customers_to_retain(
            segments, at, cfg["dashboard"]["top_customers"],
            cfg["dashboard"]["retain_segments"]))
    out.update(_backtest(spark, root, held))
    return out


def _backtest(spark: SparkSession, root: str, held: _Held) -> dict:
    """The latest backtest: each model's mean over the origins (or its one origin), the served
    spend model's deciles at the evaluation date, and the BTYD calibration."""
    deciles = _table(spark, root, "gold", "clv_backtest_deciles")
    backtest = _table(spark, root, "gold", "clv_backtest")
    if deciles is None or backtest is None:
        return {}
    backtest = held.keep(backtest)  # a few rows per model and origin
    when = _latest(backtest)
    bt = backtest.where(F.col("as_of") == F.lit(when))
    h = bt.agg(F.max("horizon_days")).first()[0]
    bt = bt.where(F.col("horizon_days") == h)
    out: dict[str, Any] = {"backtest_as_of": when, "backtest_horizon": h}
    means = bt.where(F.col("origin").isNull())
    shown = means if means.limit(1).count() else bt.where(F.col("origin") == F.lit(when))
    out["backtest"] = _rows(shown.orderBy(F.desc_nulls_last("normalised_gini"), "model"))
    out["origins"] = sorted(r[0] for r in bt.select("origin").distinct().collect()
                            if r[0] is not None)  # a few origins
    served = [r["model"] for r in out["backtest"] if "spend" in (r.get("served") or "")]
    ours = served or [r["model"] for r in out["backtest"]
                      if r["role"] in ("candidate", "champion")]
    if ours:
        out["deciles_model"] = ours[0]
        out["deciles"] = _rows(deciles.where(
            (F.col("as_of") == F.lit(when)) & (F.col("horizon_days") == h)
            & (F.col("origin") == F.lit(when)) & (F.col("model") == ours[0])).orderBy("decile"))
    calibration = _table(spark, root, "gold", "clv_calibration")
    if calibration is not None:
        out["calibration"] = _rows(calibration.where(
            (F.col("as_of") == F.lit(when)) & (F.col("horizon_days") == h)).orderBy("kind", "x"))
    return out


def _changes(spark: SparkSession, root: str, rfm: DataFrame, dates: list[dt.date],
             cfg: Config, predicted: tuple[DataFrame, dt.date, int] | None) -> dict:
    before, after = dates[-2], dates[-1]
    report = _table(spark, root, "gold", "drift_report")
    migration = _table(spark, root, "gold", "segment_migration")
    if report is not None and migration is not None:
        same = (F.col("as_of") == F.lit(after)) & (F.col("from_as_of") == F.lit(before))
        flags = _rows(report.where(same).orderBy("kind", "check")
                      .select("check", "kind", "value", "threshold", "breach"))
        if flags:  # written by `custseg drift` for these two dates: not computed again
            return {"before": before, "after": after, "flags": flags,
                    "moves": _rows(migration.where(same))}
    clusters = _table(spark, root, "gold", CUSTOMER_CLUSTERS)
    preds = _table(spark, root, "gold", CLV_PREDICTIONS)
    if preds is not None and predicted is not None:
        preds = preds.where(F.col("horizon_days") == predicted[2])
    moves, checks = drift.compare(rfm, before, after, cfg, clusters, preds)
    return {"before": before, "after": after, "moves": _rows(moves),
            "flags": [vars(c) for c in checks]}


def _quality(spark: SparkSession, root: str, held: _Held) -> dict:
    out: dict[str, Any] = {}
    q = _table(spark, root, "silver", QUARANTINE)
    if q is not None:
        out["reasons"] = _rows(q.groupBy("reason").count().orderBy(F.desc("count"), "reason"))
    log = _table(spark, root, "silver", REFINE_LOG)
    if log is not None:
        log = held.keep(log)  # one row per batch
        out["batches"] = log.count()
        out["recent"] = _rows(log.orderBy(F.desc("refined_at")).limit(10))
        out["totals"] = log.agg(*[F.sum(c).alias(c) for c in (
            "bronze_rows", "fact_rows", "cancellation_rows", "quarantine_rows")]).first().asDict()
    return out


def _audiences(spark: SparkSession, root: str, as_of: dt.date, cfg: Config) -> dict:
    """Each configured audience at the latest date: its size, who is in it, the actions."""
    table = _table(spark, root, "gold", "audiences")
    if table is None:
        return {}
    # one row per audience
    sizes = {r["audience"]: r["count"] for r in
             table.where(F.col("as_of") == F.lit(as_of)).groupBy("audience").count().collect()}
    actions = cfg["dashboard"]["actions"]
    rows = []
    for name, spec in cfg["audiences"].items():
        who = [f"{key}: {', '.join(map(str, spec[key]))}" for key in ("segments", "clusters",
                                                                      "tiers") if spec.get(key)]
        if spec.get("min_p_alive") is not None:
            who.append(f"P(alive) at least {spec['min_p_alive']}")
        rows.append({"audience": name, "customers": sizes.get(name, 0),
                     "who": "; ".join(who) or "everyone",
                     "action": " / ".join(actions[s] for s in spec.get("segments") or []
                                          if s in actions) or "-"})
    return {"as_of": as_of, "rows": rows}


def collect(spark: SparkSession, root: str, cfg: Config) -> Page:
    """Read the gold (and a few silver) tables and aggregate everything the page shows.

    The sections are independent, each a handful of small queries whose time is mostly fixed
    cost (planning, Delta's file listing, scheduling) rather than work, so they run side by
    side."""
    transactions = _table(spark, root, "gold", "report_transactions")
    customers = _table(spark, root, "gold", "report_customers")
    if transactions is None or customers is None:
        raise InputError(f"{lakehouse.normalise_root(root)}: no gold report tables; run "
                         "'custseg report' (or 'custseg run') first")
    work: dict[str, Callable[[], Any]] = {"kpis": lambda: kpis(transactions, customers),
                                          "sales": lambda: _sales(spark, root, cfg)}
    held = _Held()
    try:
        rfm = _table(spark, root, "gold", RFM_SEGMENTS)
        if rfm is not None:
            dates = drift.as_of_dates(rfm)
            predicted = _predictions(spark, root, cfg, held)
            work["segments"] = lambda: _segments(rfm, dates[-1], predicted, held)
            work["clusters"] = lambda: _clusters(spark, root, rfm, dates[-1], cfg, held)
            work["value"] = lambda: _value(spark, root, rfm, cfg, predicted, held)
            if len(dates) >= 2:
                work["changes"] = lambda: _changes(spark, root, rfm, dates, cfg, predicted)
            work["audiences"] = lambda: _audiences(spark, root, dates[-1], cfg)
        work["quality"] = lambda: _quality(spark, root, held)
        done = dict(zip(work, run_all(list(work.values())), strict=True))
    finally:
        held.release()
    page = Page(kpis=done.pop("kpis"),
                generated=dt.datetime.now().isoformat(sep=" ", timespec="seconds"),
                root=lakehouse.normalise_root(root))
    page.sections.update(done)
    return page


# ---------------------------------------------------------------- rendering (driver, no Spark)
