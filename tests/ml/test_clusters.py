"""Clusters: repeatable whatever the input order; the choice of k by stability, elbow and
silhouette; the algorithms; names from robust z-scores."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import functions as F

from custseg.config import load_config
from custseg.ml.clusters import (
    MIXTURE_JITTER,
    Sweep,
    assign,
    choose_k,
    elbow,
    fit_clusters,
    fit_input,
    name_clusters,
    stability,
)


def _features(spark):
    # three well separated groups in (recency, frequency, monetary)
    base = spark.range(600).select(
        F.col("id").cast("int").alias("customer_id"),
        F.lit(dt.date(2011, 12, 10)).alias("as_of"),
        (F.col("id") % 3).alias("g"),
        (F.rand(1) * 0.2 + 0.9).alias("noise"),
    )
    return base.select(
        "customer_id", "as_of",
        (F.when(F.col("g") == 0, 5).when(F.col("g") == 1, 60).otherwise(300) * F.col("noise"))
        .alias("recency_days"),
        (F.when(F.col("g") == 0, 40).when(F.col("g") == 1, 6).otherwise(1) * F.col("noise"))
        .alias("frequency"),
        (F.when(F.col("g") == 0, 9000).when(F.col("g") == 1, 800).otherwise(50) * F.col("noise"))
        .alias("monetary"),
        "g",
    )


def test_same_clusters_whatever_the_partitioning(spark):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=4", "cluster.resamples=2"])
    features = _features(spark).cache()
    shuffled = features.repartition(7, F.rand(3)).cache()
    model_a, sweep_a = fit_clusters(features, cfg)
    model_b, sweep_b = fit_clusters(shuffled, cfg)
    a = {r["customer_id"]: r["cluster"] for r in assign(model_a, features).collect()}
    b = {r["customer_id"]: r["cluster"] for r in assign(model_b, features).collect()}
    assert a == b
    assert sweep_a.chosen_k == sweep_b.chosen_k == 3
    groups = {r["customer_id"]: r["g"] for r in features.select("customer_id", "g").collect()}
    assert len({(groups[c], a[c]) for c in a}) == 3  # each cluster is exactly one group


def test_elbow_on_a_known_curve():
    wcss = {2: 100.0, 3: 40.0, 4: 30.0, 5: 25.0, 6: 22.0}
    assert elbow(wcss) == 3


def _criteria(silhouette, stability, wcss=None, bic=None, algorithm="kmeans"):
    return Sweep(silhouette=dict(silhouette), stability=dict(stability), wcss=dict(wcss or {}),
                 bic=dict(bic or {}), algorithm=algorithm)


# WCSS whose kneedle elbow is k = 5: the line from (3, 100) to (8, 20) is farthest above it there
WCSS = {3: 100.0, 4: 70.0, 5: 40.0, 6: 33.0, 7: 26.0, 8: 20.0}


def test_the_stable_elbow_wins_when_its_silhouette_is_close_to_the_best():
    sweep = _criteria({3: 0.50, 4: 0.49, 5: 0.47, 6: 0.40, 7: 0.39, 8: 0.38},
                      {3: 0.9, 4: 0.9, 5: 0.85, 6: 0.7, 7: 0.6, 8: 0.5}, WCSS)
    choose_k(sweep, min_stability=0.8, tolerance=0.05)
    assert (sweep.elbow_k, sweep.chosen_k) == (5, 5)
    assert sweep.reason.startswith("the elbow of the WCSS")
    assert sweep.verdicts[6].startswith("unstable") and sweep.verdicts[4].startswith("stable")


def test_the_best_stable_silhouette_wins_when_the_elbow_is_far_below_it():
    sweep = _criteria({3: 0.50, 4: 0.49, 5: 0.44, 6: 0.40, 7: 0.39, 8: 0.38},
                      {3: 0.9, 4: 0.9, 5: 0.85, 6: 0.7, 7: 0.6, 8: 0.5}, WCSS)
    choose_k(sweep, min_stability=0.8, tolerance=0.05)
    assert sweep.chosen_k == 3
    assert "elbow k = 5 has silhouette 0.440, more than 0.05 below" in sweep.reason


def test_an_unstable_elbow_is_not_chosen_even_with_the_best_silhouette():
    sweep = _criteria({3: 0.40, 4: 0.45, 5: 0.60, 6: 0.40, 7: 0.39, 8: 0.38},
                      {3: 0.9, 4: 0.85, 5: 0.79, 6: 0.7, 7: 0.6, 8: 0.5}, WCSS)
    choose_k(sweep, min_stability=0.8, tolerance=0.05)
    assert sweep.chosen_k == 4
    assert "elbow k = 5 is unstable (ARI 0.79)" in sweep.reason


def test_no_stable_k_takes_the_most_stable_and_says_so():
    sweep = _criteria({3: 0.5, 4: 0.6, 5: 0.4}, {3: 0.5, 4: 0.7, 5: 0.7}, {3: 9, 4: 5, 5: 4})
    choose_k(sweep, min_stability=0.8, tolerance=0.05)
    assert sweep.chosen_k == 4  # the tie at 0.7 goes to the smaller k
    assert sweep.reason.startswith("no k reached stability 0.80")


def test_a_mixture_takes_the_lowest_bic_among_the_stable_k():
    sweep = _criteria({3: 0.5, 4: 0.4, 5: 0.3}, {3: 0.9, 4: 0.95, 5: 0.6},
                      bic={3: 900.0, 4: 800.0, 5: 700.0}, algorithm="gaussian_mixture")
    choose_k(sweep, min_stability=0.8, tolerance=0.05)
    assert sweep.chosen_k == 4 and sweep.elbow_k == 0
    assert sweep.reason.startswith("lowest BIC (800)")


def test_a_fixed_k_overrides_the_rule():
    sweep = _criteria({6: 0.2}, {6: 0.3})
    choose_k(sweep, min_stability=0.8, tolerance=0.05, fixed=6)
    assert sweep.chosen_k == 6 and sweep.reason == "k = 6 fixed by cluster.k"
    assert sweep.verdicts[6].startswith("chosen")


def test_stability_is_the_mean_pairwise_ari_of_the_resample_fits(spark):
    from sklearn.metrics import adjusted_rand_score

    from custseg.ml.clusters import _fits, _sweep_sample, prep_pipeline

    cfg = load_config(overrides=["cluster.resamples=3"])
    features = _features(spark)
    points = prep_pipeline(cfg["cluster"]["features"]).fit(features).transform(features)
    sample = _sweep_sample(points.select("customer_id", "features"), 600, 1000, 42).cache()
    fits = {k: _fits(sample, sample, k, cfg["cluster"])[2] for k in (3, 6)}
    got = stability(sample, fits)
    for k, models in fits.items():
        labels = []
        for m in models:
            rows = m.transform(sample).orderBy("customer_id").collect()
            labels.append([r[m.getPredictionCol()] for r in rows])
        pairs = [(0, 1), (0, 2), (1, 2)]
        want = sum(adjusted_rand_score(labels[a], labels[b]) for a, b in pairs) / 3
        assert got[k] == pytest.approx(want, abs=1e-9)
    assert got[3] == pytest.approx(1.0)  # three separated groups: every resample finds them
    assert got[6] < 0.8  # six clusters split the groups a different way in each resample
    sample.unpersist()


# Spark's mixture starts from random weights and falls into a poorer optimum on some
# resamples (k = 3 scores 0.56 on two), so its case keeps every k and leaves k to the BIC.
@pytest.mark.parametrize("algorithm,settings", [
    ("bisecting_kmeans", []), ("gaussian_mixture", ["cluster.min_stability=0"])])
def test_the_other_algorithms_find_the_three_groups(spark, algorithm, settings):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=4", "cluster.resamples=2",
                                 f"cluster.algorithm={algorithm}", *settings])
    features = _features(spark).cache()
    model, sweep = fit_clusters(features, cfg)
    assert sweep.chosen_k == 3
    got = {r["customer_id"]: r["cluster"] for r in assign(model, features).collect()}
    groups = {r["customer_id"]: r["g"] for r in features.select("customer_id", "g").collect()}
    assert len({(groups[c], got[c]) for c in got}) == 3
    # the pipeline's last stage numbers centres in descending order, log recency first: the
    # lapsed group (g = 2, recency about 300 days) is cluster 0
    assert {groups[c] for c in got if got[c] == 0} == {2}
    if algorithm == "gaussian_mixture":
        # each group lies on a curve (one noise factor scales all three features), so without
        # the jitter every component's covariance is singular to about 1e-15; with it, no
        # direction has much less than the jitter's variance
        floors = [min(np.linalg.eigvalsh(g.cov.toArray())) for g in model.stages[-2].gaussians]
        assert min(floors) > 0.5 * MIXTURE_JITTER ** 2
    features.unpersist()


def test_mixture_jitter_is_small_uniform_and_fixed_per_customer(spark):
    # the third coordinate carries the customer id: its offset (under 0.002) rounds away
    points = spark.range(20_000).select(
        F.col("id").alias("customer_id"),
        array_to_vector(F.array(F.lit(0.0), F.lit(5.0), F.col("id").cast("double")))
        .alias("features"))

    def offsets(df):
        got = df.select(vector_to_array("features").alias("v"))
        return got.select(F.round(F.col("v")[2]).cast("long").alias("customer_id"),
                          F.col("v")[0].alias("a"), (F.col("v")[1] - 5.0).alias("b"))

    plain = fit_input(points, "kmeans", 42)
    assert plain.where(vector_to_array("features")[1] != 5.0).count() == 0
    jittered = offsets(fit_input(points, "gaussian_mixture", 42))
    stats = jittered.select(*(f(c) for c in ("a", "b") for f in (F.stddev, F.max, F.min))).first()
    # a uniform of standard deviation s spans +-s * sqrt(3)
    assert stats[0] == pytest.approx(MIXTURE_JITTER, rel=0.03)
    assert stats[3] == pytest.approx(MIXTURE_JITTER, rel=0.03)
    assert max(stats[1], stats[4], -stats[2], -stats[5]) <= MIXTURE_JITTER * 3 ** 0.5
    assert jittered.select(F.corr("a", "b")).first()[0] == pytest.approx(0, abs=0.03)
    # each customer's offsets again under another partitioning, compared in Spark
    again = offsets(fit_input(points.repartition(7, F.rand(2)), "gaussian_mixture", 42))
    pairs = jittered.join(again.withColumnRenamed("a", "a2").withColumnRenamed("b", "b2"),
                          "customer_id")
    same = pairs.select(F.count("*"), F.sum(((F.col("a") == F.col("a2"))
                                             & (F.col("b") == F.col("b2"))).cast("int"))).first()
    assert tuple(same) == (20_000, 20_000)


def test_names_from_robust_z_scores():
    centre = {"recency_days": 50.0, "frequency": 2.0, "monetary": 600.0}
    scale = {"recency_days": 40.0, "frequency": 1.0, "monetary": 400.0}

    def row(c, r, f, m, seg="Champions"):
        return {"cluster": c, "median_recency_days": r, "median_frequency": f,
                "median_monetary": m, "dominant_segment": seg}

    rows = [
        # z: R -1.0 ("recent", under 1.5), F +10 (the noun: "regulars"), M +11.5 ("top-")
        row(0, 10.0, 12.0, 5200.0),
        # z: R +3.75 (long-lapsed), F 1 -> one-time buyers, M -0.75 (low-spending)
        row(1, 200.0, 1.0, 300.0),
        # z: R -0.25 and M +0.25, under 0.3: no adjective; F 3 is z +1 -> regulars
        row(2, 40.0, 3.0, 700.0),
        # the same words as cluster 0 (z M 4.0, R -1.0): a clash settled by the RFM segment
        row(3, 10.0, 8.0, 2200.0, "Loyal Customers"),
    ]
    assert name_clusters(rows, centre, scale) == {
        0: "top-spending recent regulars, mostly Champions",
        1: "long-lapsed low-spending one-time buyers",
        2: "regulars",
        3: "top-spending recent regulars, mostly Loyal Customers",
    }


def test_sweep_on_a_sample_fits_the_chosen_k_on_everyone(spark):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=4", "cluster.resamples=2",
                                 "cluster.sweep_sample=150"])
    features = _features(spark).cache()
    model, sweep = fit_clusters(features, cfg)
    assert sweep.customers == 600
    assert 100 <= sweep.swept_on <= 200  # a hash keeps each customer with probability 1/4
    assert sweep.chosen_k == 3
    assert sum(model.stages[-2].summary.clusterSizes) == 600
    got = {r["customer_id"]: r["cluster"] for r in assign(model, features).collect()}
    groups = {r["customer_id"]: r["g"] for r in features.select("customer_id", "g").collect()}
    assert len({(groups[c], got[c]) for c in got}) == 3
    _, again = fit_clusters(features.repartition(5, F.rand(9)), cfg)
    assert again.swept_on == sweep.swept_on
    assert again.wcss == pytest.approx(sweep.wcss, rel=1e-9)


def test_kmeans_input_has_a_partition_per_hundred_thousand_rows_up_to_the_shuffle(spark):
    from custseg.ml.clusters import kmeans_input

    points = spark.range(50).withColumnRenamed("id", "customer_id")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "8")
    try:
        sizes = {rows: kmeans_input(points, rows).rdd.getNumPartitions()
                 for rows in (50, 100_000, 100_001, 350_000, 5_000_000)}
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert sizes == {50: 1, 100_000: 1, 100_001: 2, 350_000: 4, 5_000_000: 8}


def test_kmeans_fits_as_auto_would_without_its_solver_query(spark):
    """The row solver is the one ``auto`` picks for these points: the same centres and cost
    to the last bit, with fewer Spark jobs, as auto's summary query is not run."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import VectorAssembler

    from custseg.ml.clusters import estimator

    points = VectorAssembler(inputCols=["recency_days", "frequency", "monetary"],
                             outputCol="features").transform(_features(spark)).cache()
    points.count()
    sc = spark.sparkContext

    def fit(name, kmeans):
        sc.setJobGroup(f"solver-{name}", name)
        try:
            model = kmeans.fit(points)
        finally:
            for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
                sc.setLocalProperty(key, None)
        jobs = len(sc.statusTracker().getJobIdsForGroup(f"solver-{name}"))
        return [list(c) for c in model.clusterCenters()], model.summary.trainingCost, jobs

    named = estimator("kmeans", 3, 7, 20)
    auto = KMeans(k=3, seed=7, maxIter=20, featuresCol="features", predictionCol="raw_cluster")
    assert auto.getSolver() == "auto"
    centres, cost, jobs = fit("named", named)
    auto_centres, auto_cost, auto_jobs = fit("auto", auto)
    points.unpersist()
    assert centres == auto_centres and cost == auto_cost
    assert jobs < auto_jobs


def test_the_sweep_leaves_nothing_cached(spark):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=3",
                                 "cluster.sweep_sample=150"])
    features = _features(spark).cache()
    features.count()
    before = spark.sparkContext._jsc.getPersistentRDDs().size()
    fit_clusters(features, cfg)
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == before
    features.unpersist()


def test_a_model_registered_before_the_relabelling_stage_still_gets_stable_labels(spark):
    from pyspark.ml import PipelineModel
    from pyspark.ml.clustering import KMeans

    from custseg.ml.clusters import prep_pipeline

    features = _features(spark).cache()
    prep = prep_pipeline(["recency_days", "frequency", "monetary"]).fit(features)
    kmeans = KMeans(k=3, seed=1, predictionCol="cluster").fit(prep.transform(features))
    old = PipelineModel(stages=[*prep.stages, kmeans])
    got = {r["customer_id"]: r["cluster"] for r in assign(old, features).collect()}
    groups = {r["customer_id"]: r["g"] for r in features.select("customer_id", "g").collect()}
    # centres in descending order, log recency first: lapsed (g 2), then g 1, then recent g 0
    assert {(groups[c], got[c]) for c in got} == {(2, 0), (1, 1), (0, 2)}
    features.unpersist()
