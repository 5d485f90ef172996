"""The clv stage on a generated sample: leakage, backtest table, registry, champion, rollback."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F

from custseg import lakehouse, tracking
from custseg.cli import main
from custseg.clv import examples, features_at, fit_input, fit_spend_model, max_bins
from custseg.clv_stage import SPEND_MODEL, TIER_MODEL, clv, plan
from custseg.config import load_config
from custseg.refine import CANCELLATIONS, FACT
from tests.conftest import generated_lakehouse

SETTINGS = ["spark.shuffle_partitions=2", "segment.windows_days=[90]", "clv.horizon_days=60",
            "clv.gbt.max_iter=4", "clv.gbt.min_instances_per_node=5"]
AS_OF = "2011-10-01"


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    cfg = load_config(overrides=SETTINGS)
    root = generated_lakehouse(spark, tmp_path_factory.mktemp("clv"), 1200, 5, cfg)
    return {"root": root, "cfg": cfg}


@pytest.fixture(scope="module")
def runs(spark, lake):
    root, cfg = lake["root"], lake["cfg"]
    first = clv(spark, root, cfg, as_of=AS_OF, backtest=True)
    predictions = lakehouse.table_path(root, "gold", "clv_predictions")
    version_first = lakehouse.version(spark, predictions)
    skipped = clv(spark, root, cfg, as_of=AS_OF, backtest=True)
    skipped_versions = (version_first, lakehouse.version(spark, predictions))
    # as if the first run had been killed after registering: no completion record
    shutil.rmtree(lakehouse.table_path(root, "ops", "stage_runs"))
    again = clv(spark, root, cfg, as_of=AS_OF, backtest=True)
    tracking.configure(root, cfg)
    versions_after_again = [r for r in tracking.list_models()]
    other = load_config(overrides=[*SETTINGS, "clv.gbt.max_iter=8"])
    third = clv(spark, root, other, as_of=AS_OF, backtest=True)
    return dict(first=first, again=again, third=third, after_again=versions_after_again,
                skipped=skipped, skipped_versions=skipped_versions)


def _gold(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", name))


def _changed_after(fact, day):
    """Every line on or after ``day`` ten times dearer, plus a new big customer after it."""
    after = F.col("invoice_date") >= F.lit(day).cast("timestamp")
    changed = fact.withColumn("total_price", F.when(after, F.col("total_price") * 10)
                              .otherwise(F.col("total_price")))
    extra = (fact.where(after).limit(50)
             .withColumn("customer_id", F.lit(99999999))
             .withColumn("total_price", F.lit(1e6)))
    return changed.unionByName(extra)


def test_nothing_on_or_after_the_evaluation_date_reaches_training_or_features(spark, lake):
    """Change every transaction from the evaluation date on: the training examples, the
    evaluation features and the fitted model's predictions stay exactly the same."""
    root, cfg = lake["root"], lake["cfg"]
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", FACT))
    cancellations = lakehouse.read(spark, lakehouse.table_path(root, "silver", CANCELLATIONS))
    evaluation, cutoffs = plan(dt.date(2010, 12, 1), dt.date.fromisoformat(AS_OF), 60, 2,
                               backtest=True)
    leaked = _changed_after(fact, evaluation)

    def training(f):
        parts = [examples(spark, f, cancellations, c, cfg)[0] for c in cutoffs]
        return parts[0].unionByName(parts[1])

    def rows(df):
        return sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                      for r in df.collect())

    clean_train, leaked_train = training(fact), training(leaked)
    assert rows(clean_train) == rows(leaked_train)
    clean_feats = features_at(spark, fact, cancellations, evaluation, cfg)[0]
    leaked_feats = features_at(spark, leaked, cancellations, evaluation, cfg)[0]
    assert rows(clean_feats) == rows(leaked_feats)
    # and the control: the leaked copy does change the labels at the evaluation date
    label = examples(spark, leaked, cancellations, evaluation, cfg)[0]
    assert label.agg(F.sum("actual_spend")).first()[0] > examples(
        spark, fact, cancellations, evaluation, cfg)[0].agg(F.sum("actual_spend")).first()[0]

    def predictions(train):
        data = fit_input(train).persist()
        model = fit_spend_model(data, cfg, max_bins(data))
        return rows(model.transform(clean_feats).select("customer_id", "predicted_spend"))

    assert predictions(clean_train) == predictions(leaked_train)


def test_backtest_table_has_every_model_side_by_side(spark, lake, runs):
    bt = _gold(spark, lake["root"], "clv_backtest").where(F.col("as_of") == F.lit(AS_OF))
    models = {r["model"]: r.asDict() for r in bt.collect()}
    assert {"gbt", "past_spend_rate", "seed_formula", "bgnbd_gg", "paretonbd_gg"} <= set(models)
    for r in models.values():
        assert r["customers"] == runs["third"].rows_in
        assert r["horizon_days"] == 60
        assert 0.0 <= r["tier_accuracy"] <= 1.0
        assert r["rmse"] >= r["mae"] >= 0.0
    # the third run had a champion to beat, so the champion was judged on the same customers
    assert "champion" in models
    deciles = _gold(spark, lake["root"], "clv_backtest_deciles").where(
        (F.col("as_of") == F.lit(AS_OF)) & (F.col("model") == "gbt"))
    assert deciles.agg(F.sum("customers")).first()[0] == runs["third"].rows_in
    assert any(line.lstrip().startswith("bgnbd_gg") for line in runs["third"].notes)


def test_an_identical_rerun_registers_nothing_and_changes_nothing(runs):
    assert runs["skipped"].rows_out == {}
    assert any("nothing written" in n for n in runs["skipped"].notes)
    assert runs["skipped_versions"][0] == runs["skipped_versions"][1]
    assert any("not refitted" in n for n in runs["again"].notes)
    by_name = {}
    for r in runs["after_again"]:
        by_name.setdefault(r["name"], []).append(r["version"])
    assert by_name[SPEND_MODEL] == ["1"] and by_name[TIER_MODEL] == ["1"]


def test_new_version_becomes_champion_only_if_it_beats_the_champion(spark, lake, runs):
    root, cfg = lake["root"], lake["cfg"]
    tracking.configure(root, cfg)
    bt = {r["model"]: r for r in _gold(spark, root, "clv_backtest")
          .where(F.col("as_of") == F.lit(AS_OF)).collect()}
    new, held = bt["gbt"], bt["champion"]
    want_spend = "2" if new["normalised_gini"] > held["normalised_gini"] else "1"
    want_tier = "2" if new["tier_macro_f1"] > held["tier_macro_f1"] else "1"
    assert tracking.champion_version(SPEND_MODEL) == want_spend
    assert tracking.champion_version(TIER_MODEL) == want_tier
    versions = {(r["name"], r["version"]) for r in tracking.list_models()}
    assert {(SPEND_MODEL, "2"), (TIER_MODEL, "2")} <= versions


def test_predictions_come_from_the_champion_and_a_rollback_changes_the_next_scoring(
        spark, lake, runs, capsys):
    root, cfg = lake["root"], lake["cfg"]
    tracking.configure(root, cfg)
    current = tracking.champion_version(SPEND_MODEL)
    preds = _gold(spark, root, "clv_predictions").where(F.col("as_of") == F.lit(AS_OF))
    assert {r[0] for r in preds.select("spend_model_version").distinct().collect()} == {current}
    assert preds.count() == runs["third"].rows_in
    assert preds.where(F.col("actual_spend").isNull()).count() == 0
    other = "1" if current == "2" else "2"
    args = ["--lakehouse", root, *sum((["--set", s] for s in SETTINGS), [])]
    assert main(["models", "rollback", SPEND_MODEL, "--to", other, *args]) == 0
    assert main(["models", "rollback", SPEND_MODEL, "--to", "7", *args]) == 2
    assert "has no version 7" in capsys.readouterr().err
    assert main(["clv", "--as-of", AS_OF, "--backtest", "--use-champion", *args]) == 0
    preds = _gold(spark, root, "clv_predictions").where(F.col("as_of") == F.lit(AS_OF))
    assert {r[0] for r in preds.select("spend_model_version").distinct().collect()} == {other}
    assert preds.count() == runs["third"].rows_in
    assert main(["models", "list", *args]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith(SPEND_MODEL)]
    assert len(listed) == 2
    assert [line for line in listed if "champion" in line][0].split()[1] == f"v{other}"


def test_registered_models_pin_the_running_spark_and_mlflow(lake, runs):
    """The requirements are given, not inferred (inference imports the model in a subprocess),
    and still pin what is running."""
    from pathlib import Path

    import mlflow
    import mlflow.pyfunc
    import pyspark

    tracking.configure(lake["root"], lake["cfg"])
    for name in (SPEND_MODEL, TIER_MODEL):
        path = mlflow.pyfunc.get_model_dependencies(f"models:/{name}@{tracking.CHAMPION}")
        pins = Path(path).read_text().split()
        assert f"pyspark=={pyspark.__version__}" in pins
        assert f"mlflow=={mlflow.__version__}" in pins
