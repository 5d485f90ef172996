"""The clv stage: train out of time, backtest against baselines, register, score with champions.

Evaluation date E: the as-of date T with ``--backtest`` (actual spend after T must be in the
data), otherwise T - horizon, the last horizon whose outcome is known. Models train on
examples with features before E - h (E - 2h, ... when stacked) and labels up to E, are judged
at E beside the baselines and the current champion, and become champion only when they beat
it there. Predictions at T always come from the champion alias, so a rollback changes the next
scoring.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg import lakehouse, pipeline_run, tracking
from custseg.backtest import SpendMetrics, TierMetrics, spend_metrics, tier_metrics
from custseg.clv import (
    BASELINES,
    BtydFits,
    examples,
    features_at,
    fit_input,
    fit_spend_model,
    fit_tier_model,
    max_bins,
    tier_of,
)
from custseg.config import Config
from custseg.errors import InputError
from custseg.refine import CANCELLATIONS, FACT
from custseg.segment import resolve_as_of
from custseg.summary import StageSummary

SPEND_MODEL = "custseg-clv-spend"
TIER_MODEL = "custseg-clv-tier"
CLV_PREDICTIONS = "clv_predictions"
CLV_BACKTEST = "clv_backtest"
CLV_DECILES = "clv_backtest_deciles"
FINGERPRINT = "training_fingerprint"


def plan(first_day: dt.date, as_of: dt.date, horizon: int, windows: int,
         backtest: bool) -> tuple[dt.date, list[dt.date]]:
    """(evaluation date, training cutoffs newest first); an error when history is too short."""
    step = dt.timedelta(days=horizon)
    evaluation = as_of if backtest else as_of - step
    cutoffs = [evaluation - step * k for k in range(1, windows + 1)]
    if cutoffs[-1] <= first_day:
        raise InputError(
            f"clv: not enough history for a {horizon}-day horizon: training needs purchases "
            f"before {cutoffs[-1]} (evaluation at {evaluation}, {windows} training "
            f"window(s)) but the first invoice is on {first_day}; use a shorter "
            "--horizon-days, fewer clv.training_windows or a later --as-of")
    return evaluation, cutoffs


def _predict(model: PipelineModel, df: DataFrame, out: dict[str, str]) -> DataFrame:
    """``df`` plus the model's output columns renamed (its working columns dropped)."""
    scored = model.transform(df)
    return scored.select(*df.columns, *[F.col(src).alias(dst) for src, dst in out.items()])


def _fingerprint(spark: SparkSession, root: str, cfg: Config, evaluation: dt.date,
                 cutoffs: list[dt.date]) -> str:
    versions = [lakehouse.version(spark, lakehouse.table_path(root, "silver", t))
                for t in (FACT, CANCELLATIONS)]
    payload = json.dumps({"inputs": versions, "clv": cfg["clv"], "evaluation": str(evaluation),
                          "cutoffs": [str(c) for c in cutoffs],
                          "windows": cfg["segment"]["windows_days"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _metric_row(name: str, role: str, version: str | None, s: SpendMetrics,
                t: TierMetrics) -> dict:
    return {"model": name, "role": role, "model_version": version, "customers": s.customers,
            "rmse": s.rmse, "mae": s.mae, "spearman": s.spearman,
            "normalised_gini": s.normalised_gini, "top_decile_share": s.top_decile_share,
            "tier_accuracy": t.accuracy, "tier_macro_f1": t.macro_f1,
            "tier_confusion": json.dumps({f"{a}->{p}": n
                                          for (a, p), n in sorted(t.confusion.items())})}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _table(rows: list[dict]) -> list[str]:
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'model':<16}{'version':>8}{'RMSE':>11}{'MAE':>10}{'Spearman':>10}{'Gini*':>8}"
            f"{'top10%':>8}{'tier acc':>9}{'macro-F1':>9}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['model']:<16}{r['model_version'] or '-':>8}{f(r['rmse'], ',.1f'):>11}"
                     f"{f(r['mae'], ',.1f'):>10}{f(r['spearman'], '.3f'):>10}"
                     f"{f(r['normalised_gini'], '.3f'):>8}{f(r['top_decile_share'], '.1%'):>8}"
                     f"{f(r['tier_accuracy'], '.3f'):>9}{f(r['tier_macro_f1'], '.3f'):>9}")
    return lines


def _log_fits(fits: BtydFits, prefix: str) -> None:
    import mlflow

    for fit in (fits.bgnbd, fits.paretonbd, fits.gammagamma):
        mlflow.log_params({f"{prefix}{fit.model}_{k}": round(v, 6)
                           for k, v in fit.params.items()})
        mlflow.log_param(f"{prefix}{fit.model}_dropout_identified", fit.dropout_identified)


def _register(model: PipelineModel, name: str, tags: dict) -> str:
    from mlflow import MlflowClient

    info = tracking.log_spark_model(model, artifact_path=name, registered_model_name=name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))
    return version


def _load(name: str, version: str) -> PipelineModel:
    import mlflow.spark

    return mlflow.spark.load_model(f"models:/{name}/{version}")


def _train(spark: SparkSession, fact: DataFrame, cancellations: DataFrame,
           cutoffs: list[dt.date], cfg: Config, summary: StageSummary
           ) -> tuple[PipelineModel, PipelineModel, int]:
    """Fit the spend and tier models on examples stacked over the training cutoffs."""
    train = None
    cached: list[DataFrame] = []
    for cutoff in cutoffs:
        part, _ = examples(spark, fact, cancellations, cutoff, cfg, cached)
        train = part if train is None else train.unionByName(part)
    train = train.persist()
    n_train = train.count()
    _release(cached)
    if n_train < 10:
        train.unpersist()
        raise InputError(f"clv: only {n_train} training customers before {cutoffs[0]}")
    cap = cfg["clv"]["training_sample"]
    fit_on = fit_input(train.sample(fraction=cap / n_train, seed=cfg["clv"]["gbt"]["seed"])
                       if n_train > cap else train).persist()
    bins = max_bins(fit_on)
    spend_model = fit_spend_model(fit_on, cfg, bins)
    tier_model = fit_tier_model(fit_on, cfg, bins)
    train.unpersist()
    fit_on.unpersist()
    summary.notes.append(f"training examples {n_train:,}" + (
        f" (fitted on a {cap:,}-row sample)" if n_train > cap else ""))
    return spend_model, tier_model, n_train


def _release(cached: list[DataFrame]) -> None:
    for df in cached:
        df.unpersist()
    cached.clear()


def clv(spark: SparkSession, root: str, cfg: Config, as_of: str | None = None,
        horizon_days: int | None = None, backtest: bool = False,
        use_champion: bool = False) -> StageSummary:
    """Write gold/clv_backtest, gold/clv_backtest_deciles and gold/clv_predictions."""
    import mlflow

    start = time.time()
    summary = StageSummary("clv")
    cfg = {**cfg, "clv": {**cfg["clv"]}}
    if horizon_days is not None:
        if horizon_days < 1:
            raise InputError(f"--horizon-days must be at least 1, got {horizon_days}")
        cfg["clv"]["horizon_days"] = horizon_days
    h = cfg["clv"]["horizon_days"]
    fact_path = lakehouse.table_path(root, "silver", FACT)
    if not lakehouse.exists(spark, fact_path):
        raise InputError(f"{fact_path}: no silver table; run 'custseg refine' first")
    fact = lakehouse.read(spark, fact_path)
    cancel_path = lakehouse.table_path(root, "silver", CANCELLATIONS)
    cancellations = (lakehouse.read(spark, cancel_path) if lakehouse.exists(spark, cancel_path)
                     else spark.createDataFrame([], "customer_id int, invoice_date timestamp, "
                                                    "amount double"))
    bounds = fact.where(F.col("customer_id").isNotNull()).agg(
        F.min("invoice_date"), F.max("invoice_date")).first()
    if bounds[0] is None:
        raise InputError("silver/fct_invoices has no identified customers: nothing to value")
    first_day, last_day = bounds[0].date(), bounds[1].date()
    T = resolve_as_of(spark, root, cfg, as_of, section="clv")
    evaluation, cutoffs = plan(first_day, T, h, cfg["clv"]["training_windows"], backtest)
    if evaluation + dt.timedelta(days=h) > last_day + dt.timedelta(days=1):
        summary.notes.append(f"warning: the data ends on {last_day}, so actual spend covers "
                             f"only part of [{evaluation}, {evaluation + dt.timedelta(days=h)})")
    summary.notes.append(f"as of {T}, horizon {h} days; backtest at {evaluation}; training "
                         f"cutoffs {', '.join(map(str, cutoffs))}")

    tracking.configure(root, cfg)
    scope = f"{T} h{h}"
    key = pipeline_run.stage_key(
        spark, root, [("silver", FACT), ("silver", CANCELLATIONS)], as_of=T, horizon_days=h,
        backtest=backtest, clv=cfg["clv"], windows=cfg["segment"]["windows_days"],
        use_champion=use_champion,
        champions=[tracking.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)]
        if use_champion else None)
    outputs = [("gold", t) for t in (CLV_PREDICTIONS, CLV_BACKTEST, CLV_DECILES)]
    done = pipeline_run.completed_by(spark, root, "clv", scope, key, outputs)
    if done:
        summary.notes.append(f"as of {T}, horizon {h} days: same inputs and settings as run "
                             f"{done}; nothing written")
        summary.seconds = time.time() - start
        return summary
    fingerprint = _fingerprint(spark, root, cfg, evaluation, cutoffs)
    if use_champion:
        reused = {n: tracking.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)}
        missing = [n for n, v in reused.items() if v is None]
        if missing:
            raise InputError(f"--use-champion: no '{tracking.CHAMPION}' version of "
                             f"{', '.join(missing)} is registered yet")
    else:
        reused = {n: tracking.version_with_tag(n, FINGERPRINT, fingerprint)
                  for n in (SPEND_MODEL, TIER_MODEL)}
    n_train = 0
    if all(reused.values()):
        spend_model = _load(SPEND_MODEL, reused[SPEND_MODEL])
        tier_model = _load(TIER_MODEL, reused[TIER_MODEL])
        summary.notes.append(
            f"champion versions {reused[SPEND_MODEL]} / {reused[TIER_MODEL]}, not refitted"
            if use_champion else "same inputs and settings as versions "
            f"{reused[SPEND_MODEL]} / {reused[TIER_MODEL]}: not refitted")
    else:
        spend_model, tier_model, n_train = _train(spark, fact, cancellations, cutoffs, cfg,
                                                  summary)
    cached: list[DataFrame] = []
    evaluated, eval_fits = examples(spark, fact, cancellations, evaluation, cfg, cached)
    evaluated = evaluated.persist()
    n_eval = evaluated.count()
    _release(cached)
    summary.rows_in = n_eval

    with mlflow.start_run(run_name=f"clv {T} h{h}" + (" backtest" if backtest else ""),
                          tags=pipeline_run.mlflow_tags("clv")) as run:
        run_id = run.info.run_id
        mlflow.log_params({"as_of": str(T), "horizon_days": h, "backtest": backtest,
                           "use_champion": use_champion, "evaluation_date": str(evaluation),
                           "training_cutoffs": ",".join(map(str, cutoffs)),
                           "training_examples": n_train, "backtest_customers": n_eval,
                           **{f"gbt_{k}": v for k, v in cfg["clv"]["gbt"].items()},
                           "tier_mid": cfg["clv"]["tier_cuts"]["mid"],
                           "tier_high": cfg["clv"]["tier_cuts"]["high"]})
        _log_fits(eval_fits, "backtest_")
        for fit in (eval_fits.bgnbd, eval_fits.paretonbd):
            if not fit.dropout_identified:
                summary.notes.append(f"{fit.model}: the data do not identify when customers "
                                     "stop buying; its predictions assume no dropout")

        cuts = cfg["clv"]["tier_cuts"]
        candidate = _predict(spend_model, evaluated, {"predicted_spend": "gbt"})
        candidate = _predict(tier_model, candidate, {"predicted_tier": "gbt_tier"}).persist()
        rows, deciles = [], {}

        def judge(df: DataFrame, name: str, role: str, version: str | None, spend: str,
                  tier: str | None) -> dict:
            s = spend_metrics(df, spend)
            tiered = df if tier else df.withColumn("_tier", tier_of(F.col(spend), cuts))
            t = tier_metrics(tiered, tier or "_tier")
            deciles[name] = s.deciles
            row = _metric_row(name, role, version, s, t)
            rows.append(row)
            return row

        new = judge(candidate, "champion" if use_champion else "gbt",
                    "champion" if use_champion else "candidate", None, "gbt", "gbt_tier")
        for name in BASELINES:
            judge(candidate, name, "baseline", None, name, None)
        champions = {n: tracking.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)}
        held = None
        if all(champions.values()) and [champions[SPEND_MODEL], champions[TIER_MODEL]] != [
                reused[SPEND_MODEL], reused[TIER_MODEL]]:
            try:
                current = _predict(_load(SPEND_MODEL, champions[SPEND_MODEL]), evaluated,
                                   {"predicted_spend": "champion"})
                current = _predict(_load(TIER_MODEL, champions[TIER_MODEL]), current,
                                   {"predicted_tier": "champion_tier"})
                held = judge(current, "champion", "champion",
                             f"{champions[SPEND_MODEL]}/{champions[TIER_MODEL]}", "champion",
                             "champion_tier")
            except Exception as exc:  # an older model that no longer fits today's features
                summary.notes.append(f"champion could not score this backtest "
                                     f"({type(exc).__name__}); the new models are compared "
                                     "with nothing")
        candidate.unpersist()

        versions = dict(reused)
        for model, name, metric in ((spend_model, SPEND_MODEL, "normalised_gini"),
                                    (tier_model, TIER_MODEL, "tier_macro_f1")):
            if versions[name] is None:
                versions[name] = _register(model, name, {
                    FINGERPRINT: fingerprint, "evaluation_date": evaluation, "horizon_days": h,
                    metric: new[metric]})
            current = champions[name]
            if current is None:
                tracking.set_champion(name, versions[name])
                summary.notes.append(f"{name} version {versions[name]} is '{tracking.CHAMPION}' "
                                     "(the first)")
            elif current == versions[name]:
                summary.notes.append(f"{name} '{tracking.CHAMPION}' stays version {current}")
            elif held is None or (new[metric] or 0.0) > (held[metric] or 0.0):
                tracking.set_champion(name, versions[name])
                summary.notes.append(
                    f"{name} version {versions[name]} beats version {current} on {metric} "
                    f"({_num(new[metric])} vs {_num(held[metric] if held else None)}): "
                    f"now '{tracking.CHAMPION}'")
            else:
                summary.notes.append(
                    f"{name} version {versions[name]} does not beat version {current} on "
                    f"{metric} ({_num(new[metric])} vs {_num(held[metric])}); "
                    f"'{tracking.CHAMPION}' stays {current}")
        rows[0]["model_version"] = f"{versions[SPEND_MODEL]}/{versions[TIER_MODEL]}"

        for r in rows:
            tag = r["model"]
            mlflow.log_metrics({f"{tag}_{k}": r[k] for k in (
                "rmse", "mae", "spearman", "normalised_gini", "top_decile_share",
                "tier_accuracy", "tier_macro_f1") if r[k] is not None})
        backtest_df = spark.createDataFrame(
            [{**r, "as_of": evaluation, "horizon_days": h, "run_id": run_id} for r in rows],
            "model string, role string, model_version string, customers long, rmse double, "
            "mae double, spearman double, normalised_gini double, top_decile_share double, "
            "tier_accuracy double, tier_macro_f1 double, tier_confusion string, as_of date, "
            "horizon_days int, run_id string")
        replace_as_of_horizon(backtest_df, lakehouse.table_path(root, "gold", CLV_BACKTEST),
                              evaluation, h)
        decile_df = spark.createDataFrame(
            [{**d, "model": m, "as_of": evaluation, "horizon_days": h}
             for m, ds in deciles.items() for d in ds],
            "decile int, customers long, mean_predicted double, mean_actual double, "
            "model string, as_of date, horizon_days int")
        replace_as_of_horizon(decile_df, lakehouse.table_path(root, "gold", CLV_DECILES),
                              evaluation, h)
        table = _table(rows)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "clv_backtest.txt")
            with open(path, "w") as fh:
                fh.write("\n".join(table) + "\n")
            mlflow.log_artifact(path)

        if backtest:
            current_features = evaluated
        else:
            current_features, fits = features_at(spark, fact, cancellations, T, cfg, cached)
            _log_fits(fits, "scoring_")
        final = {n: tracking.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)}
        import mlflow.spark

        scored = _predict(mlflow.spark.load_model(f"models:/{SPEND_MODEL}@{tracking.CHAMPION}"),
                          current_features, {"predicted_spend": "predicted_spend"})
        scored = _predict(mlflow.spark.load_model(f"models:/{TIER_MODEL}@{tracking.CHAMPION}"),
                          scored, {"predicted_tier": "predicted_tier"})
        actual = (F.col("actual_spend") if backtest else F.lit(None).cast("double"))
        actual_tier = (F.col("actual_tier") if backtest else F.lit(None).cast("string"))
        predictions = scored.select(
            "customer_id", F.lit(T).alias("as_of"), F.lit(h).alias("horizon_days"),
            "predicted_spend", "predicted_tier",
            F.col("bgnbd_p_alive").alias("p_alive"),
            F.col("bgnbd_purchases").alias("expected_purchases"),
            F.lit(SPEND_MODEL).alias("spend_model"),
            F.lit(final[SPEND_MODEL]).alias("spend_model_version"),
            F.lit(TIER_MODEL).alias("tier_model"),
            F.lit(final[TIER_MODEL]).alias("tier_model_version"),
            actual.alias("actual_spend"), actual_tier.alias("actual_tier"),
            F.lit(run_id).alias("run_id"))
        pred_path = lakehouse.table_path(root, "gold", CLV_PREDICTIONS)
        replace_as_of_horizon(predictions, pred_path, T, h)
        evaluated.unpersist()
        _release(cached)
        written = lakehouse.read(spark, pred_path).where(
            (F.col("as_of") == F.lit(T)) & (F.col("horizon_days") == h))
        tiers = {r["predicted_tier"]: r["count"]
                 for r in written.groupBy("predicted_tier").count().collect()}  # three rows
        total = written.agg(F.sum("predicted_spend")).first()[0] or 0.0
        summary.rows_out["gold/clv_predictions"] = sum(tiers.values())
        summary.rows_out["gold/clv_backtest"] = len(rows)
        summary.notes.append(
            f"predicted spend in the next {h} days: {total:,.0f} over "
            f"{sum(tiers.values()):,} customers (tiers: "
            + ", ".join(f"{t} {tiers.get(t, 0):,}" for t in ("High", "Mid", "Low")) + ")")
        summary.notes.append(f"scored by {SPEND_MODEL} v{final[SPEND_MODEL]}, {TIER_MODEL} "
                             f"v{final[TIER_MODEL]}; mlflow run {run_id}")
        summary.notes.append(f"backtest at {evaluation} ({n_eval:,} customers, Gini* = "
                             "normalised Gini, top10% = share of actual spend in the top "
                             "predicted decile):")
        summary.notes.extend(table)
    summary.seconds = time.time() - start
    pipeline_run.record_completion(spark, root, "clv", scope, key, summary.seconds)
    return summary


def replace_as_of_horizon(df: DataFrame, path: str, as_of: dt.date, horizon: int) -> None:
    """Replace the rows of one (as-of date, horizon); other dates and horizons are kept."""
    lakehouse.replace_where(
        df, path, f"as_of = DATE'{as_of.isoformat()}' AND horizon_days = {horizon}", "as_of")
