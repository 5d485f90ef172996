"""The segment stage: RFM segments and KMeans clusters as of a date, tracked in MLflow."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import tempfile
import time

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.arrow import from_rows
from custseg.io.catalog import (
    CANCELLATIONS,
    CLUSTER_PROFILES,
    CLUSTER_SELECTION,
    CUSTOMER_CLUSTERS,
    FACT,
    RFM_SEGMENTS,
    SEGMENT_MODEL,
)
from custseg.io.preflight import parse_as_of
from custseg.ml.clusters import Sweep, assign, fit_clusters, name_clusters, population, profiles
from custseg.ml.rfm import customer_features, default_as_of, rfm_segments
from custseg.runtime import context, memo, registry
from custseg.runtime.summary import StageSummary

FINGERPRINT = "training_fingerprint"


def replace_as_of(df: DataFrame, path: str, as_of: dt.date) -> None:
    """Replace the rows of one as-of date (other dates are kept, so history builds)."""
    lakehouse.replace_where(df, path, f"as_of = DATE'{as_of.isoformat()}'", "as_of")


def resolve_as_of(spark: SparkSession, root: str, cfg: Config, as_of: str | None,
                  section: str = "segment") -> dt.date:
    """--as-of, else ``<section>.as_of``, else the day after the last invoice."""
    text = as_of or cfg[section]["as_of"]
    if text:
        return parse_as_of(text)
    return default_as_of(lakehouse.read(spark, lakehouse.table_path(root, "silver", FACT)))


def selection_table(spark: SparkSession, sweep: Sweep, as_of: dt.date) -> DataFrame:
    """One row per k tried: every criterion, whether it is the elbow or the chosen k, and the
    verdict (why the chosen k won; whether another was stable)."""
    return from_rows(
        spark, [(as_of, k, sweep.algorithm, sweep.wcss.get(k), sweep.silhouette[k],
                 sweep.stability[k], sweep.bic.get(k), k == sweep.elbow_k, k == sweep.chosen_k,
                 sweep.verdicts[k]) for k in sorted(sweep.silhouette)],
        "as_of date, k int, algorithm string, wcss double, silhouette double, stability double, "
        "bic double, elbow boolean, chosen boolean, verdict string")


def criteria_lines(sweep: Sweep) -> list[str]:
    """The criteria table as printed by the run, one line per k, then the reason."""
    out = []
    for k in sorted(sweep.silhouette):
        cost = (f"BIC {sweep.bic[k]:,.0f}" if k in sweep.bic else f"WCSS {sweep.wcss[k]:,.1f}")
        mark = " <- chosen" if k == sweep.chosen_k else " (elbow)" if k == sweep.elbow_k else ""
        out.append(f"k = {k}: {cost}, silhouette {sweep.silhouette[k]:.3f}, stability "
                   f"{sweep.stability[k]:.2f}{mark}")
    out.append(f"{sweep.algorithm} k = {sweep.chosen_k}: {sweep.reason}")
    return out


def _charts(sweep: Sweep, folder: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(sweep.silhouette)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    cost = sweep.bic or sweep.wcss
    a.plot(ks, [cost[k] for k in ks], marker="o")
    if sweep.elbow_k:
        a.axvline(sweep.elbow_k, linestyle="--", color="grey", label=f"elbow k={sweep.elbow_k}")
        a.legend()
    a.set(title="BIC" if sweep.bic else "Within-cluster sum of squares", xlabel="k")
    for ax, values, title in ((b, sweep.silhouette, "Silhouette"),
                              (c, sweep.stability, "Stability (mean ARI of resamples)")):
        ax.plot(ks, [values[k] for k in ks], marker="o", color="tab:green")
        ax.axvline(sweep.chosen_k, linestyle="--", color="grey",
                   label=f"chosen k={sweep.chosen_k}")
        ax.set(title=title, xlabel="k")
        ax.legend()
    fig.tight_layout()
    path = os.path.join(folder, "cluster_selection.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def segment(
    spark: SparkSession, root: str, cfg: Config, as_of: str | None = None,
    use_champion: bool = False,
) -> StageSummary:
    """Write gold/rfm_segments, gold/customer_clusters and gold/cluster_profiles for a date,
    then gold/report_customers with those segments."""
    start = time.time()
    summary = StageSummary("segment")
    fact_path = lakehouse.table_path(root, "silver", FACT)
    if not lakehouse.exists(spark, fact_path):
        raise InputError(f"{fact_path}: no silver table; run 'custseg refine' first")
    date = resolve_as_of(spark, root, cfg, as_of)
    registry.configure(root, cfg)
    step = memo.Step(
        "segment", str(date), inputs=[("silver", FACT), ("silver", CANCELLATIONS)],
        outputs=[("gold", t) for t in (RFM_SEGMENTS, CUSTOMER_CLUSTERS, CLUSTER_PROFILES)],
        settings=dict(as_of=date, segment=cfg["segment"], cluster=cfg["cluster"],
                      use_champion=use_champion, champion=registry.champion_version(
                          SEGMENT_MODEL) if use_champion else None))
    done = memo.materialise(spark, root, step, lambda key: _segment_and_cluster(
        spark, root, cfg, date, key, use_champion, summary))
    if done:
        summary.notes.append(f"as of {date}: same inputs and settings as run {done}; "
                             "nothing written")
    from custseg.stages.report import refresh_customer_report

    refreshed = refresh_customer_report(spark, root)
    if refreshed is not None:
        summary.rows_out["gold/report_customers"] = refreshed
    summary.seconds = time.time() - start
    return summary


def _segment_and_cluster(spark: SparkSession, root: str, cfg: Config, date: dt.date, key: str,
                         use_champion: bool, summary: StageSummary) -> None:
    """RFM segments, the cluster model (fitted or reused) and the cluster tables, in one
    MLflow run."""
    import mlflow

    features, segments, counts = _segments(spark, root, cfg, date, summary)
    cl = cfg["cluster"]
    with mlflow.start_run(run_name=f"segment {date}",
                          tags=context.mlflow_tags("segment")) as run:
        mlflow.log_params({"as_of": str(date), "features": ",".join(cl["features"]),
                           "algorithm": cl["algorithm"], "k_min": cl["k_min"],
                           "k_max": cl["k_max"], "k_fixed": cl["k"], "seed": cl["seed"],
                           "resamples": cl["resamples"], "min_stability": cl["min_stability"],
                           "use_champion": use_champion, "customers": summary.rows_in})
        mlflow.log_metrics({f"segment_{k.lower().replace(' ', '_')}": v
                            for k, v in counts.items()})
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        model, version = _cluster_model(spark, root, cfg, features, date, fingerprint,
                                        use_champion, summary)
        rows, names = _write_clusters(spark, root, cfg, model, version, features, segments,
                                      date, summary)
        summary.notes.append(f"mlflow run {run.info.run_id}")
    for r in sorted(rows, key=lambda r: -r["share_revenue"]):
        summary.notes.append(
            f"cluster {r['cluster']} '{names[r['cluster']]}': {r['customers']:,} customers "
            f"({r['share_customers']:.1%}), {r['share_revenue']:.1%} of revenue, median R "
            f"{r['median_recency_days']:.0f} d, F {r['median_frequency']:.0f}, M "
            f"{r['median_monetary']:,.0f}; mostly {r['dominant_segment']}")


def _segments(spark: SparkSession, root: str, cfg: Config, date: dt.date,
              summary: StageSummary) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """Features (persisted) and gold/rfm_segments of the date, and customers per segment."""
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", FACT))
    cancel_path = lakehouse.table_path(root, "silver", CANCELLATIONS)
    cancellations = (lakehouse.read(spark, cancel_path) if lakehouse.exists(spark, cancel_path)
                     else from_rows(spark, [], "customer_id int, invoice_date timestamp, "
                                               "amount double"))
    features = customer_features(fact, cancellations, date, cfg["segment"]["windows_days"])
    features = features.persist()
    n = features.count()
    if n < 3:
        features.unpersist()
        raise InputError(f"segment: only {n} customers with purchases before {date}")
    summary.rows_in = n
    rfm_path = lakehouse.table_path(root, "gold", RFM_SEGMENTS)
    replace_as_of(rfm_segments(features, cfg), rfm_path, date)
    segments = lakehouse.read(spark, rfm_path).where(F.col("as_of") == F.lit(date))
    # one row per segment name (ten by default) reaches the driver
    counts = {r["segment"]: r["count"] for r in segments.groupBy("segment").count().collect()}
    summary.rows_out["gold/rfm_segments"] = sum(counts.values())
    summary.notes.append(f"as of {date}")
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        summary.notes.append(f"segment {name}: {count:,} ({count / n:.1%})")
    return features, segments, counts


def _cluster_model(spark: SparkSession, root: str, cfg: Config, features: DataFrame,
                   date: dt.date, fingerprint: str, use_champion: bool,
                   summary: StageSummary) -> tuple[PipelineModel, str]:
    """The champion (--use-champion), a version registered for the same inputs and settings,
    or a new fit: registered, made champion, its selection written to gold/cluster_selection."""
    import mlflow

    if use_champion:
        version = registry.champion_version(SEGMENT_MODEL)
        if version is None:
            raise InputError(f"--use-champion: no '{registry.CHAMPION}' version of "
                             f"{SEGMENT_MODEL} is registered yet")
        summary.notes.append(f"clusters assigned by {SEGMENT_MODEL} version {version}")
        return registry.load_spark_model(f"models:/{SEGMENT_MODEL}@{registry.CHAMPION}"), version
    if version := registry.version_with_tag(SEGMENT_MODEL, FINGERPRINT, fingerprint):
        registry.set_champion(SEGMENT_MODEL, version)
        summary.notes.append(f"same inputs and settings as {SEGMENT_MODEL} version {version} "
                             f"(a run that stopped early): not refitted; '{registry.CHAMPION}'")
        return registry.load_spark_model(f"models:/{SEGMENT_MODEL}/{version}"), version
    model, sweep = fit_clusters(features, cfg, summary.step)
    for k in sorted(sweep.silhouette):
        for metric in ("wcss", "bic", "silhouette", "stability"):
            if k in getattr(sweep, metric):
                mlflow.log_metric(metric, getattr(sweep, metric)[k], step=k)
    mlflow.log_metrics({"chosen_k": sweep.chosen_k, "elbow_k": sweep.elbow_k,
                        "chosen_silhouette": sweep.silhouette[sweep.chosen_k],
                        "chosen_stability": sweep.stability[sweep.chosen_k]})
    mlflow.set_tag("k_reason", sweep.reason)
    summary.notes.extend(criteria_lines(sweep))
    mlflow.log_params({"swept_on": sweep.swept_on})
    if sweep.swept_on < sweep.customers:
        summary.notes.append(f"k swept on a {sweep.swept_on:,}-customer sample of "
                             f"{sweep.customers:,}; k = {sweep.chosen_k} fitted on all")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(_charts(sweep, tmp))
    replace_as_of(selection_table(spark, sweep, date),
                  lakehouse.table_path(root, "gold", CLUSTER_SELECTION), date)
    summary.rows_out["gold/cluster_selection"] = len(sweep.silhouette)
    (uri,) = registry.log_spark_models({"model": model}, "segment").values()
    version = registry.register(uri, SEGMENT_MODEL, {FINGERPRINT: fingerprint})
    registry.set_champion(SEGMENT_MODEL, version)
    summary.notes.append(f"registered {SEGMENT_MODEL} version {version} as '{registry.CHAMPION}'")
    return model, version


def _write_clusters(spark: SparkSession, root: str, cfg: Config, model: PipelineModel,
                    version: str, features: DataFrame, segments: DataFrame, date: dt.date,
                    summary: StageSummary) -> tuple[list[dict], dict[int, str]]:
    """gold/customer_clusters and gold/cluster_profiles of the date, with the names; the
    profiles also go to MLflow as a CSV. Returns the profile rows (one per cluster)."""
    import mlflow

    assigned = assign(model, features).persist()
    profile = profiles(assigned, segments, cfg["cluster"]["features"]).persist()
    rows = [r.asDict() for r in profile.collect()]  # one row per cluster (k <= k_max)
    names = name_clusters(rows, *population(segments, cfg["cluster"]["features"]))
    name_df = from_rows(spark, [(k, v) for k, v in names.items()],
                        "cluster int, cluster_name string")
    replace_as_of(assigned.join(F.broadcast(name_df), "cluster")
                  .select("customer_id", "as_of", "cluster", "cluster_name"),
                  lakehouse.table_path(root, "gold", CUSTOMER_CLUSTERS), date)
    replace_as_of(profile.join(F.broadcast(name_df), "cluster")
                  .withColumn("model_version", F.lit(str(version))),
                  lakehouse.table_path(root, "gold", CLUSTER_PROFILES), date)
    assigned.unpersist()
    profile.unpersist()
    features.unpersist()
    summary.rows_out["gold/customer_clusters"] = sum(r["customers"] for r in rows)
    summary.rows_out["gold/cluster_profiles"] = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cluster_profiles.csv")
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*rows[0].keys(), "cluster_name"])
            writer.writeheader()
            for r in sorted(rows, key=lambda r: r["cluster"]):
                writer.writerow({**r, "cluster_name": names[r["cluster"]]})
        mlflow.log_artifact(path)
    return rows, names
