"""What the clv stage writes: the backtest with intervals, the deciles, the BTYD calibration,
the predictions; and the table it prints."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.io import lakehouse
from custseg.io.arrow import from_rows, to_pandas
from custseg.io.catalog import CLV_PREDICTIONS
from custseg.ml import btyd, promotion
from custseg.ml.clv import BASELINES, KEY
from custseg.runtime.summary import StageSummary

if TYPE_CHECKING:
    from custseg.stages.clv import Origin, Plan

BACKTEST = "clv_backtest"
DECILES = "clv_backtest_deciles"
CALIBRATION = "clv_calibration"
WITH_INTERVALS = ("normalised_gini", "spearman", "top_decile_share", "tier_macro_f1")
BACKTEST_SCHEMA = (
    "as_of date, origin date, horizon_days int, model string, role string, "
    "model_version string, served string, customers long, rmse double, mae double, "
    + ", ".join(f"{m} double, {m}_low double, {m}_high double" for m in WITH_INTERVALS)
    + ", tier_accuracy double, tier_confusion string, predicted_total double, "
    "actual_total double, interval_coverage double, run_id string")
MAX_REPEAT = 7


def replace_as_of_horizon(df: DataFrame, path: str, as_of: dt.date, horizon: int) -> None:
    """Replace the rows of one (as-of date, horizon); other dates and horizons are kept."""
    lakehouse.replace_where(
        df, path, f"as_of = DATE'{as_of.isoformat()}' AND horizon_days = {horizon}", "as_of")


def _role(name: str) -> str:
    if name == "champion":
        return "champion"
    return "baseline" if name in BASELINES else "candidate"


def _row(name: str, metrics: dict, draws: dict, confidence: float) -> dict:
    row = {k: metrics.get(k) for k in ("customers", "rmse", "mae", "tier_accuracy",
                                       "predicted_total", "actual_total", "interval_coverage")}
    for m in WITH_INTERVALS:
        row[m] = metrics.get(m)
        values = draws.get(m, np.zeros(0))
        low, high = promotion._interval(values, confidence) if values.size else (None, None)
        row[f"{m}_low"], row[f"{m}_high"] = low, high
    return {"model": name, "role": _role(name), **row}


def _mean_row(name: str, origins: list[Origin], confidence: float) -> dict | None:
    held = [o for o in origins if name in o.scores]
    if len(held) < 2:
        return None
    metrics, draws = {}, {}
    for m in ("rmse", "mae", "tier_accuracy", "interval_coverage", *WITH_INTERVALS):
        values = [o.scores[name].metrics.get(m) for o in held]
        metrics[m] = None if any(v is None for v in values) else float(np.mean(values))
    for m in ("customers", "predicted_total", "actual_total"):
        values = [o.scores[name].metrics.get(m) for o in held]
        metrics[m] = None if any(v is None for v in values) else sum(values)
    for m in WITH_INTERVALS:
        results = {o.day: promotion.Result(o.scores[name].metrics.get(m),
                                           o.scores[name].draws.get(m, np.zeros(0)))
                   for o in held}
        draws[m] = promotion.mean_draws(results, [o.day for o in held])[1]
    return {**_row(name, metrics, draws, confidence), "origin": None}


def backtest_rows(origins: list[Origin], versions: dict[str, str],
                  registered: dict[str, dict[str, str]], served: dict[str, str],
                  confidence: float) -> list[dict]:
    """Every model at every origin, and its mean over the origins (``origin`` None)."""
    rows = []
    names = list(dict.fromkeys(n for o in origins for n in o.scores))
    for name in names:
        for o in origins:
            if name in o.scores:
                s = o.scores[name]
                rows.append({**_row(name, s.metrics, s.draws, confidence), "origin": o.day,
                             "tier_confusion": json.dumps({f"{a}->{p}": n for (a, p), n in
                                                           sorted(s.confusion.items())})})
        mean = _mean_row(name, origins, confidence)
        if mean is not None:
            rows.append(mean)
    for r in rows:
        family = r["model"]
        if family in registered:
            r["model_version"] = registered[family].get("custseg-clv-spend")
        elif family == "champion":
            r["model_version"] = "/".join(versions.values())
        r["served"] = ",".join(k.rsplit("-", 1)[-1] for k, f in served.items() if f == family) \
            or None
    return rows


def write_backtest(spark: SparkSession, root: str, origins: list[Origin], p: Plan,
                   versions: dict[str, str], registered: dict[str, dict[str, str]],
                   served: dict[str, str], cfg: Config, run_id: str) -> list[dict]:
    """gold/clv_backtest and gold/clv_backtest_deciles for the run's evaluation date."""
    import mlflow

    confidence = cfg["clv"]["bootstrap"]["confidence"]
    rows = backtest_rows(origins, versions, registered, served, confidence)
    fields = [f.split()[0] for f in BACKTEST_SCHEMA.split(", ")]
    records = [{**{k: None for k in fields}, **r, "as_of": p.evaluation,
                "horizon_days": p.horizon, "run_id": run_id} for r in rows]
    df = from_rows(spark, [tuple(r[k] for k in fields) for r in records], BACKTEST_SCHEMA)
    replace_as_of_horizon(df, lakehouse.table_path(root, "gold", BACKTEST), p.evaluation,
                          p.horizon)
    deciles = [(d["decile"], d["customers"], d["mean_predicted"], d["mean_actual"], name,
                o.day, p.evaluation, p.horizon)
               for o in origins for name, s in o.scores.items() for d in s.deciles]
    replace_as_of_horizon(from_rows(
        spark, deciles, "decile int, customers long, mean_predicted double, mean_actual double, "
                        "model string, origin date, as_of date, horizon_days int"),
        lakehouse.table_path(root, "gold", DECILES), p.evaluation, p.horizon)
    for r in rows:
        tag = f"{r['model']}_{r['origin'] or 'mean'}".replace("-", "")
        mlflow.log_metrics({f"{tag}_{m}": r[m] for m in (*WITH_INTERVALS, "interval_coverage")
                            if r.get(m) is not None})
    lines = table(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clv_backtest.txt")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        mlflow.log_artifact(path)
    return rows


def _with_interval(row: dict, metric: str, spec: str) -> str:
    value = row.get(metric)
    if value is None:
        return "-"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    text = format(value, spec)
    if low is None:
        return text
    return f"{text} [{format(low, spec)}, {format(high, spec)}]"


def table(rows: list[dict]) -> list[str]:
    """The backtest as printed: one line per model and origin, the mean last."""
    head = (f"{'model':<16}{'origin':<12}{'Gini* [interval]':<24}{'Spearman':<24}"
            f"{'top10%':<22}{'macro-F1':<24}{'pred/act':>9}{'cover':>7}")
    out = [head]
    for r in rows:
        ratio = (r["predicted_total"] / r["actual_total"]
                 if r.get("predicted_total") is not None and r.get("actual_total") else None)
        cover = r.get("interval_coverage")
        out.append(
            f"{r['model']:<16}{str(r['origin'] or 'mean'):<12}"
            f"{_with_interval(r, 'normalised_gini', '.3f'):<24}"
            f"{_with_interval(r, 'spearman', '.3f'):<24}"
            f"{_with_interval(r, 'top_decile_share', '.1%'):<22}"
            f"{_with_interval(r, 'tier_macro_f1', '.3f'):<24}"
            f"{'-' if ratio is None else format(ratio, '.2f'):>9}"
            f"{'-' if cover is None else format(cover, '.0%'):>7}")
    return out


def _expected_cumulative(keys, fits, days: list[int]) -> dict[str, list[float]]:  # noqa: ANN001
    """Expected purchases of all customers up to each day, per purchase model."""
    x, t_x, age, n = (keys[c].to_numpy(float) for c in (*KEY, "count"))
    out = {}
    with np.errstate(all="ignore"):
        for model, expected in (("bgnbd", btyd.bgnbd_expected),
                                ("paretonbd", btyd.paretonbd_expected)):
            params = getattr(fits, model).values()
            out[model] = [float(np.nansum(n * expected(params, d, x, t_x, age))) for d in days]
    return out


def calibration_rows(invoices: DataFrame, origin: Origin, horizon: int) -> list[tuple]:
    """Expected against actual purchase days in the horizon: by repeat purchases before the
    origin (``by_repeat``, 0..7+, per customer) and cumulative over the horizon (all
    customers)."""
    ex = origin.examples
    by = (ex.groupBy(F.least(F.col("repeat_purchases"), F.lit(MAX_REPEAT)).alias("x"))
          .agg(F.count("*").alias("n"), F.avg("bgnbd_purchases").alias("bg"),
               F.avg("paretonbd_purchases").alias("pn"), F.avg("actual_purchases").alias("a"))
          .collect())  # at most MAX_REPEAT + 1 rows
    rows = [("by_repeat", int(r["x"]), int(r["n"]), r["bg"], r["pn"], float(r["a"]))
            for r in sorted(by, key=lambda r: r["x"])]
    step = max(1, horizon // 15)
    days = sorted({*range(step, horizon + 1, step), horizon})
    keys = to_pandas(ex.groupBy(*KEY).count())  # one row per distinct (x, t_x, T)
    expected = _expected_cumulative(keys, origin.fits, days)
    start = F.lit(origin.day).cast("timestamp")
    daily = (invoices.where((F.col("invoice_date") >= start)
                        & (F.col("invoice_date") < start + F.expr(f"INTERVAL {horizon} DAYS")))
             .join(ex.select("customer_id"), "customer_id", "left_semi")
             .groupBy(F.datediff(F.to_date("invoice_date"), F.lit(origin.day)).alias("d"))
             .agg(F.countDistinct("customer_id").alias("n")).collect())  # one row per day
    counts = {r["d"]: r["n"] for r in daily}
    total = len(keys) and int(keys["count"].sum())
    for i, d in enumerate(days):
        actual = float(sum(v for k, v in counts.items() if k < d))
        rows.append(("cumulative", d, total, expected["bgnbd"][i], expected["paretonbd"][i],
                     actual))
    return rows


def write_calibration(spark: SparkSession, root: str, invoices: DataFrame, origin: Origin,
                      p: Plan) -> None:
    """gold/clv_calibration at E, and its chart in MLflow."""
    import mlflow

    rows = calibration_rows(invoices, origin, p.horizon)
    df = from_rows(
        spark, [(*r, p.evaluation, p.horizon) for r in rows],
        "kind string, x int, customers long, expected_bgnbd double, expected_paretonbd double, "
        "actual double, as_of date, horizon_days int")
    replace_as_of_horizon(df, lakehouse.table_path(root, "gold", CALIBRATION), p.evaluation,
                          p.horizon)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(_calibration_chart(rows, p, tmp))


def _calibration_chart(rows: list[tuple], p: Plan, folder: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, xlabel in ((axes[0], "by_repeat", f"repeat purchases before {p.evaluation}"),
                             (axes[1], "cumulative", "days into the horizon")):
        part = [r for r in rows if r[0] == kind]
        xs = [r[1] for r in part]
        ax.plot(xs, [r[5] for r in part], marker="o", label="actual")
        ax.plot(xs, [r[3] for r in part], marker=".", label="BG/NBD")
        ax.plot(xs, [r[4] for r in part], marker=".", label="Pareto/NBD")
        ax.set(xlabel=xlabel, ylabel="purchase days in the horizon"
               + (" per customer" if kind == "by_repeat" else ""))
        ax.legend()
    fig.suptitle(f"Expected against actual purchases, {p.horizon} days from {p.evaluation}")
    fig.tight_layout()
    path = os.path.join(folder, "clv_calibration.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_predictions(spark: SparkSession, root: str, scored: DataFrame, p: Plan,
                      backtest: bool, run_id: str, versions: dict[str, str],
                      families: dict[str, str], summary: StageSummary) -> None:
    """gold/clv_predictions at T, and the summary's totals."""
    spend, tier = "custseg-clv-spend", "custseg-clv-tier"
    actual = F.col("actual_spend") if backtest else F.lit(None).cast("double")
    actual_tier = F.col("actual_tier") if backtest else F.lit(None).cast("string")
    predictions = scored.select(
        "customer_id", F.lit(p.as_of).alias("as_of"), F.lit(p.horizon).alias("horizon_days"),
        *[F.col(c).cast("double").alias(f"predicted_spend{suffix}")
          for c, suffix in (("s_spend", ""), ("s_p10", "_p10"), ("s_p90", "_p90"))],
        F.col("t_tier").alias("predicted_tier"),
        F.col("bgnbd_p_alive").alias("p_alive"),
        F.col("bgnbd_purchases").alias("expected_purchases"),
        F.lit(spend).alias("spend_model"), F.lit(versions[spend]).alias("spend_model_version"),
        F.lit(families[spend]).alias("spend_model_family"),
        F.lit(tier).alias("tier_model"), F.lit(versions[tier]).alias("tier_model_version"),
        F.lit(families[tier]).alias("tier_model_family"),
        actual.alias("actual_spend"), actual_tier.alias("actual_tier"),
        F.lit(run_id).alias("run_id"))
    path = lakehouse.table_path(root, "gold", CLV_PREDICTIONS)
    replace_as_of_horizon(predictions, path, p.as_of, p.horizon)
    written = lakehouse.read(spark, path).where(
        (F.col("as_of") == F.lit(p.as_of)) & (F.col("horizon_days") == p.horizon))
    by_tier = {r["predicted_tier"]: (r["n"], r["s"]) for r in written.groupBy("predicted_tier")
               .agg(F.count("*").alias("n"), F.sum("predicted_spend").alias("s")).collect()}
    n = sum(v[0] for v in by_tier.values())
    total = sum(v[1] or 0.0 for v in by_tier.values())
    summary.rows_out["gold/clv_predictions"] = n
    summary.notes.append(
        f"predicted spend in the next {p.horizon} days: {total:,.0f} over {n:,} customers "
        "(tiers: " + ", ".join(f"{t} {by_tier.get(t, (0, 0))[0]:,}"
                               for t in ("High", "Mid", "Low")) + ")")
    summary.notes.append(f"scored by {spend} v{versions[spend]} ({families[spend]}), {tier} "
                         f"v{versions[tier]} ({families[tier]})")
