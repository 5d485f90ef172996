"""The segment stage on a generated sample: history by as-of date, clusters, MLflow registry."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F

from custseg.config import load_config
from custseg.io import lakehouse
from custseg.io.catalog import SEGMENT_MODEL
from custseg.stages.segment import segment
from tests.conftest import copy_lakehouse

SETTINGS = ["spark.shuffle_partitions=2", "cluster.k_min=2", "cluster.k_max=4",
            "segment.windows_days=[90]"]


@pytest.fixture(scope="module")
def seg(spark, refined_sample, tmp_path_factory):
    cfg = load_config(overrides=SETTINGS)
    root = copy_lakehouse(refined_sample, tmp_path_factory.mktemp("seg"))
    def clusters():
        return {r["customer_id"]: r["cluster"] for r in
                lakehouse.read(spark, lakehouse.table_path(root, "gold", "customer_clusters"))
                .collect()}

    first = segment(spark, root, cfg, as_of="2011-12-01")
    clusters_first = clusters()
    rfm_version = lakehouse.version(spark, lakehouse.table_path(root, "gold", "rfm_segments"))
    again = segment(spark, root, cfg, as_of="2011-12-01")
    again_version = lakehouse.version(spark, lakehouse.table_path(root, "gold", "rfm_segments"))
    # as if the first run had been killed after registering its model: no completion record
    shutil.rmtree(lakehouse.table_path(root, "ops", "stage_runs"))
    refit = segment(spark, root, cfg, as_of="2011-12-01")
    clusters_fitted = clusters()
    champion = segment(spark, root, cfg, as_of="2011-12-01", use_champion=True)
    later = segment(spark, root, cfg, as_of="2011-12-11")
    return dict(root=root, cfg=cfg, first=first, again=again, refit=refit, champion=champion,
                later=later, clusters_first=clusters_first, clusters_fitted=clusters_fitted,
                versions=(rfm_version, again_version))


def _gold(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", name))


def test_rerunning_an_as_of_date_replaces_its_rows(spark, seg):
    rfm = _gold(spark, seg["root"], "rfm_segments")
    per_date = {r["as_of"]: r["count"] for r in rfm.groupBy("as_of").count().collect()}
    assert set(per_date) == {dt.date(2011, 12, 1), dt.date(2011, 12, 11)}
    assert per_date[dt.date(2011, 12, 1)] == seg["first"].rows_out["gold/rfm_segments"]
    assert rfm.groupBy("as_of", "customer_id").count().where("count > 1").count() == 0
    clusters = _gold(spark, seg["root"], "customer_clusters")
    assert clusters.groupBy("as_of", "customer_id").count().where("count > 1").count() == 0


def test_later_as_of_sees_more_customers(seg):
    assert seg["later"].rows_in >= seg["first"].rows_in


def test_every_customer_has_a_segment_tier_and_cluster(spark, seg):
    rfm = _gold(spark, seg["root"], "rfm_segments").where(F.col("as_of") == "2011-12-01")
    assert rfm.where(F.col("segment").isNull() | F.col("value_tier").isNull()).count() == 0
    for col in ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score",
                "rfm_score", "frequency_90d", "monetary_90d"):
        assert col in rfm.columns
    clusters = _gold(spark, seg["root"], "customer_clusters").where(
        F.col("as_of") == "2011-12-01")
    assert clusters.count() == rfm.count()
    assert clusters.where(F.col("cluster_name").isNull()).count() == 0


def test_profiles_shares_add_up(spark, seg):
    prof = _gold(spark, seg["root"], "cluster_profiles").where(F.col("as_of") == "2011-12-01")
    rows = prof.collect()
    assert 2 <= len(rows) <= 4
    assert sum(r["share_customers"] for r in rows) == pytest.approx(1.0)
    assert sum(r["share_revenue"] for r in rows) == pytest.approx(1.0)
    assert len({r["cluster_name"] for r in rows}) == len(rows)
    rfm = _gold(spark, seg["root"], "rfm_segments").where(F.col("as_of") == "2011-12-01")
    assert sum(r["customers"] for r in rows) == rfm.count()


def test_fixed_seed_and_champion_give_the_same_clusters(spark, seg):
    clusters = {r["customer_id"]: r["cluster"] for r in
                _gold(spark, seg["root"], "customer_clusters")
                .where(F.col("as_of") == "2011-12-01").collect()}
    assert seg["clusters_first"] == seg["clusters_fitted"]
    assert clusters == seg["clusters_fitted"]
    assert any("assigned by custseg-segmentation version" in n for n in seg["champion"].notes)


def test_models_registered_with_champion_alias(seg):
    from mlflow import MlflowClient

    from custseg.runtime import registry

    registry.configure(seg["root"], seg["cfg"])
    client = MlflowClient()
    versions = sorted(int(v.version) for v in
                      client.search_model_versions(f"name='{SEGMENT_MODEL}'"))
    assert versions == [1, 2]
    assert str(client.get_model_version_by_alias(SEGMENT_MODEL, "champion").version) == "2"
    runs = client.search_runs([client.get_experiment_by_name("custseg").experiment_id])
    assert len(runs) == 4
    fitted = [r for r in runs if "chosen_k" in r.data.metrics]
    assert len(fitted) == 2
    artifacts = {a.path for a in client.list_artifacts(fitted[0].info.run_id)}
    assert {"cluster_selection.png", "cluster_profiles.csv"} <= artifacts


def test_report_customers_gains_latest_segment(spark, seg):
    rc = _gold(spark, seg["root"], "report_customers")
    assert {"segment", "rfm_score", "value_tier", "segment_as_of"} <= set(rc.columns)
    dates = {r["segment_as_of"] for r in rc.where(F.col("segment").isNotNull()).collect()}
    assert dates == {dt.date(2011, 12, 11)}


def test_same_inputs_again_write_nothing_and_a_refit_reuses_the_model(seg):
    assert seg["again"].rows_out == {}
    assert any("same inputs and settings as run" in n and "nothing written" in n
               for n in seg["again"].notes)
    assert seg["versions"][0] == seg["versions"][1]
    assert any("same inputs and settings as custseg-segmentation version 1" in n
               for n in seg["refit"].notes)
    assert seg["refit"].rows_out["gold/rfm_segments"] == seg["first"].rows_out["gold/rfm_segments"]


def test_the_registered_model_assigns_the_labels_in_the_gold_table(spark, seg):
    import mlflow.spark

    from custseg.io.catalog import CANCELLATIONS, FACT
    from custseg.ml.rfm import customer_features
    from custseg.runtime import registry

    registry.configure(seg["root"], seg["cfg"])
    model = mlflow.spark.load_model(f"models:/{SEGMENT_MODEL}@champion")  # fitted at 2011-12-11
    fact = lakehouse.read(spark, lakehouse.table_path(seg["root"], "silver", FACT))
    cancelled = lakehouse.read(spark, lakehouse.table_path(seg["root"], "silver", CANCELLATIONS))
    features = customer_features(fact, cancelled, dt.date(2011, 12, 11), [90])
    scored = {r["customer_id"]: r["cluster"]
              for r in model.transform(features).select("customer_id", "cluster").collect()}
    gold = {r["customer_id"]: r["cluster"] for r in _gold(spark, seg["root"], "customer_clusters")
            .where(F.col("as_of") == "2011-12-11").collect()}
    assert scored == gold


def test_the_selection_table_holds_every_k_and_why_one_was_chosen(spark, seg):
    rows = (_gold(spark, seg["root"], "cluster_selection")
            .where(F.col("as_of") == "2011-12-01").orderBy("k").collect())
    assert [r["k"] for r in rows] == [2, 3, 4]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["verdict"].startswith("chosen: ")
    assert all(-1 <= r["stability"] <= 1 and r["wcss"] > 0 and r["algorithm"] == "kmeans"
               for r in rows)
    assert all(r["verdict"].startswith(("stable", "unstable")) for r in rows if not r["chosen"])
    stable = [r["k"] for r in rows if r["stability"] >= 0.8]
    assert chosen[0]["k"] in stable or not stable
    printed = [n for n in seg["first"].notes if n.startswith("k = ")]
    assert len(printed) == 3


def test_a_lakehouse_not_scored_by_clv_exports_every_customer_with_empty_value(spark, seg,
                                                                              tmp_path):
    import csv

    from custseg.cli import main

    out = tmp_path / "all.csv"
    assert main(["export", "--lakehouse", seg["root"], "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    latest = _gold(spark, seg["root"], "rfm_segments").where(F.col("as_of") == "2011-12-11")
    assert sorted(int(r["customer_id"]) for r in rows) == sorted(
        r["customer_id"] for r in latest.select("customer_id").collect())
    assert {r["predicted_spend"] for r in rows} == {""} and {r["p_alive"] for r in rows} == {""}
    assert all(r["cluster_name"] for r in rows)
