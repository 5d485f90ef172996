"""KMeans clusters: repeatable whatever the input order; elbow on a known curve; names."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from custseg.clusters import assign, elbow, fit_clusters, name_clusters
from custseg.config import load_config


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
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=4"])
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


def test_names_from_medians():
    overall = {"recency_days": 50.0, "frequency": 3.0, "monetary": 1000.0}
    rows = [
        {"cluster": 0, "median_recency_days": 10.0, "median_frequency": 12.0,
         "median_monetary": 5000.0, "mean_monetary": 6000.0},
        {"cluster": 1, "median_recency_days": 200.0, "median_frequency": 1.0,
         "median_monetary": 300.0, "mean_monetary": 400.0},
    ]
    assert name_clusters(rows, overall) == {0: "recent frequent top spenders",
                                            1: "lapsed occasional low spenders"}


def test_sweep_on_a_sample_fits_the_chosen_k_on_everyone(spark):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=4",
                                 "cluster.sweep_sample=150"])
    features = _features(spark).cache()
    model, sweep = fit_clusters(features, cfg)
    assert sweep.customers == 600
    assert 100 <= sweep.swept_on <= 200  # a hash keeps each customer with probability 1/4
    assert sweep.chosen_k == 3
    assert sum(model.stages[-1].summary.clusterSizes) == 600
    got = {r["customer_id"]: r["cluster"] for r in assign(model, features).collect()}
    groups = {r["customer_id"]: r["g"] for r in features.select("customer_id", "g").collect()}
    assert len({(groups[c], got[c]) for c in got}) == 3
    _, again = fit_clusters(features.repartition(5, F.rand(9)), cfg)
    assert again.swept_on == sweep.swept_on
    assert again.wcss == pytest.approx(sweep.wcss, rel=1e-9)


def test_kmeans_input_has_a_partition_per_hundred_thousand_rows_up_to_the_shuffle(spark):
    from custseg.clusters import kmeans_input

    points = spark.range(50).withColumnRenamed("id", "customer_id")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "8")
    try:
        sizes = {rows: kmeans_input(points, rows).rdd.getNumPartitions()
                 for rows in (50, 100_000, 100_001, 350_000, 5_000_000)}
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert sizes == {50: 1, 100_000: 1, 100_001: 2, 350_000: 4, 5_000_000: 8}


def test_the_sweep_leaves_nothing_cached(spark):
    cfg = load_config(overrides=["cluster.k_min=2", "cluster.k_max=3",
                                 "cluster.sweep_sample=150"])
    features = _features(spark).cache()
    features.count()
    before = spark.sparkContext._jsc.getPersistentRDDs().size()
    fit_clusters(features, cfg)
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == before
    features.unpersist()
