"""The drift stage: an as-of date against the one before it, written to gold and MLflow.

Writes gold/segment_migration and gold/drift_report (rows of one as-of date replaced on a
rerun), logs every measure to MLflow, and tags the CLV champions for retraining when the
features they score have shifted.
"""

from __future__ import annotations

import datetime as dt
import re
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.arrow import from_rows
from custseg.io.catalog import (
    CLV_PREDICTIONS,
    CUSTOMER_CLUSTERS,
    RFM_SEGMENTS,
    SPEND_MODEL,
    TIER_MODEL,
)
from custseg.io.preflight import parse_as_of
from custseg.ml.drift import Check, as_of_dates, compare
from custseg.runtime import context, memo, registry
from custseg.runtime.summary import StageSummary
from custseg.stages.segment import replace_as_of

MIGRATION = "segment_migration"
REPORT = "drift_report"
RETRAIN_TAG = "needs_retraining"
MODEL_DRIFT_KINDS = ("rfm", "model_feature", "prediction")


def _metric_name(check: str) -> str:
    return "drift_" + re.sub(r"[^0-9a-zA-Z_]+", "_", check).strip("_").lower()


def drift(spark: SparkSession, root: str, cfg: Config, as_of: str | None = None
          ) -> StageSummary:
    """Compare ``as_of`` (default: the latest segmented date) with the date before it."""
    start = time.time()
    summary = StageSummary("drift")
    rfm_path = lakehouse.table_path(root, "gold", RFM_SEGMENTS)
    if not lakehouse.exists(spark, rfm_path):
        raise InputError(f"{rfm_path}: no segments; run 'custseg segment' first")
    rfm = lakehouse.read(spark, rfm_path)
    before, after = _dates(rfm, rfm_path, as_of)
    if before is None:
        summary.notes.append(f"no as-of date before {after}: nothing to compare yet")
        summary.seconds = time.time() - start
        return summary
    registry.configure(root, cfg)
    step = memo.Step(
        "drift", str(after), inputs=[("gold", RFM_SEGMENTS), ("gold", CUSTOMER_CLUSTERS),
                                     ("gold", CLV_PREDICTIONS)],
        outputs=[("gold", MIGRATION), ("gold", REPORT)],
        settings=dict(before=before, after=after, drift=cfg["drift"],
                      horizon_days=cfg["clv"]["horizon_days"],
                      champions=[registry.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)]))
    done = memo.materialise(spark, root, step, lambda _key: _compare_and_write(
        spark, root, cfg, rfm, before, after, summary))
    if done:
        _recorded(spark, root, before, after, done, summary)
    summary.seconds = time.time() - start
    return summary


def _dates(rfm: DataFrame, rfm_path: str, as_of: str | None
           ) -> tuple[dt.date | None, dt.date]:
    """The date compared (``as_of`` or the latest) and the segmented date before it."""
    dates = as_of_dates(rfm)
    if as_of:
        after = parse_as_of(as_of)
        if after not in dates:
            raise InputError(f"drift: no segments as of {after} in {rfm_path} (dates: "
                             f"{', '.join(map(str, dates))})")
    else:
        after = dates[-1]
    earlier = [d for d in dates if d < after]
    return (earlier[-1] if earlier else None), after


def _recorded(spark: SparkSession, root: str, before: dt.date, after: dt.date, done: str,
              summary: StageSummary) -> None:
    """The alerts an earlier run with the same inputs recorded, repeated."""
    recorded = lakehouse.read(spark, lakehouse.table_path(root, "gold", REPORT)).where(
        (F.col("as_of") == F.lit(after)) & F.col("breach"))
    summary.notes.append(f"{after} against {before}: same inputs and settings as run "
                         f"{done}; nothing written")
    summary.alerts += [f"DRIFT {r['check']} = {_fmt(r['value'])} (threshold "
                       f"{r['threshold']:g}), recorded by run {done}"
                       for r in recorded.orderBy("check").collect()]  # checks: a few dozen


def _compare_and_write(spark: SparkSession, root: str, cfg: Config, rfm: DataFrame,
                       before: dt.date, after: dt.date, summary: StageSummary) -> None:
    """Every check, logged to MLflow, written to gold, and summarised."""
    clusters_path = lakehouse.table_path(root, "gold", CUSTOMER_CLUSTERS)
    clusters = lakehouse.read(spark, clusters_path) if lakehouse.exists(
        spark, clusters_path) else None
    preds_path = lakehouse.table_path(root, "gold", CLV_PREDICTIONS)
    predictions = None
    if lakehouse.exists(spark, preds_path):
        predictions = lakehouse.read(spark, preds_path).where(
            F.col("horizon_days") == cfg["clv"]["horizon_days"])
    moves, checks = compare(rfm, before, after, cfg, clusters, predictions)
    summary.rows_in = rfm.where(F.col("as_of") == F.lit(after)).count()
    breaches = [c for c in checks if c.breach]
    run_id, flagged = _log(cfg, before, after, checks, breaches)
    replace_as_of(moves.select(
        F.lit(before).alias("from_as_of"), F.lit(after).alias("as_of"), "from_segment",
        "to_segment", "customers", "revenue", F.lit(run_id).alias("run_id")),
        lakehouse.table_path(root, "gold", MIGRATION), after)
    report = from_rows(
        spark, [(before, after, c.check, c.kind, c.value, c.threshold, c.breach, run_id)
                for c in checks],
        "from_as_of date, as_of date, check string, kind string, value double, "
        "threshold double, breach boolean, run_id string")
    replace_as_of(report, lakehouse.table_path(root, "gold", REPORT), after)
    summary.rows_out["gold/segment_migration"] = moves.count()
    summary.rows_out["gold/drift_report"] = len(checks)
    summary.notes.append(f"{after} against {before}: {len(checks)} checks, "
                         f"{len(breaches)} beyond their thresholds")
    summary.notes += [f"{c.check} = {_fmt(c.value)} (threshold {c.threshold:g})"
                      for c in checks if c.kind in ("rfm", "cluster_stability")]
    summary.alerts += [f"DRIFT {c.check} = {_fmt(c.value)} (threshold {c.threshold:g})"
                       for c in breaches]
    summary.alerts += [f"champion {f} flagged for retraining ({RETRAIN_TAG}=true); "
                       "'custseg models rollback' undoes a bad retrain" for f in flagged]
    summary.notes.append(f"mlflow run {run_id}")


def _log(cfg: Config, before: dt.date, after: dt.date, checks: list[Check],
         breaches: list[Check]) -> tuple[str, list[str]]:
    """One MLflow run with every measure; the CLV champions tagged for retraining when the
    features or predictions they rest on drifted. Returns the run id and the flagged models."""
    import mlflow

    model_drift = [c for c in breaches if c.kind in MODEL_DRIFT_KINDS]
    with mlflow.start_run(run_name=f"drift {after}",
                          tags=context.mlflow_tags("drift")) as run:
        mlflow.log_params({"as_of": str(after), "compared_with": str(before),
                           **{f"threshold_{k}": v for k, v in cfg["drift"].items()}})
        mlflow.log_metrics({_metric_name(c.check): c.value for c in checks
                            if c.value is not None})
        mlflow.log_metric("drift_breaches", len(breaches))
        mlflow.set_tag("drift_breaches", ", ".join(c.check for c in breaches) or "none")
        flagged = []
        for name in (SPEND_MODEL, TIER_MODEL):
            version = registry.champion_version(name)
            if version is None:
                continue
            registry.set_version_tag(name, version, RETRAIN_TAG,
                                     "true" if model_drift else "false")
            if model_drift:
                registry.set_version_tag(name, version, "drift_as_of", str(after))
                flagged.append(f"{name} version {version}")
        return run.info.run_id, flagged


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
