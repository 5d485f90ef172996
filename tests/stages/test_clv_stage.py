"""The clv stage on a generated sample: leakage at every origin, the backtest with intervals,
the registry, the champion rule, rollback."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from custseg.cli import main
from custseg.config import load_config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.catalog import CANCELLATIONS, FACT, SPEND_MODEL, TIER_MODEL
from custseg.ml.clv import examples
from custseg.ml.clv_models import FAMILIES, fit_candidates, fit_input, predict
from custseg.runtime import registry
from custseg.stages.clv import clv, plan
from custseg.transforms.history import History
from tests.conftest import copy_lakehouse

SETTINGS = ["spark.shuffle_partitions=2", "segment.windows_days=[90]", "clv.horizon_days=60",
            "clv.gbt.max_iter=4", "clv.gbt.min_instances_per_node=5", "clv.origins=2",
            "clv.max_snapshots=2", "clv.bootstrap.draws=40"]
AS_OF = "2011-10-01"
E, E2 = dt.date(2011, 10, 1), dt.date(2011, 9, 1)


@pytest.fixture(scope="module")
def lake(refined_sample, tmp_path_factory):
    cfg = load_config(overrides=SETTINGS)
    root = copy_lakehouse(refined_sample, tmp_path_factory.mktemp("clv"))
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
    registry.configure(root, cfg)
    versions_after_again = registry.list_models()
    other = load_config(overrides=[*SETTINGS, "clv.gbt.max_iter=6"])
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


def _rows(df):
    return sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                  for r in df.collect())


def test_nothing_on_or_after_an_origin_reaches_its_training_or_features(spark, lake):
    """For every origin: change every transaction from it on, and its training examples (every
    snapshot), its features and its fitted models' predictions stay exactly the same."""
    root, cfg = lake["root"], lake["cfg"]
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", FACT))
    cancellations = lakehouse.read(spark, lakehouse.table_path(root, "silver", CANCELLATIONS))
    p = plan(dt.date(2010, 12, 1), E, 60, cfg["clv"], backtest=True)
    assert p.origins == (E, E2)
    days = sorted({*p.origins, *(c for cs in p.cutoffs.values() for c in cs)})
    clean, fits = examples(spark, History.of(fact, cancellations), days, cfg)
    clean = clean.persist()
    labels = ["actual_spend", "actual_purchases", "actual_tier"]
    for origin in p.origins:
        cutoffs = list(p.cutoffs[origin])
        leaked, _ = examples(spark, History.of(_changed_after(fact, origin), cancellations),
                             [*cutoffs, origin], cfg)
        leaked = leaked.persist()
        for df in (clean, leaked):
            assert df.where(F.col("as_of").isin(cutoffs)).select("as_of").distinct().count() \
                == len(cutoffs)
        assert _rows(clean.where(F.col("as_of").isin(cutoffs))) == \
            _rows(leaked.where(F.col("as_of").isin(cutoffs)))
        at = F.col("as_of") == F.lit(origin)
        assert _rows(clean.where(at).drop(*labels)) == _rows(leaked.where(at).drop(*labels))
        # the control: the leaked copy does change the labels at the origin
        assert leaked.where(at).agg(F.sum("actual_spend")).first()[0] > \
            clean.where(at).agg(F.sum("actual_spend")).first()[0]
        if origin == E:
            judged = clean.where(at)
            assert _fitted_scores(clean, cutoffs, judged, fits[E], cfg) == \
                _fitted_scores(leaked, cutoffs, judged, fits[E], cfg)
        leaked.unpersist()
    clean.unpersist()


def _fitted_scores(examples_df, cutoffs, judged, fits, cfg):
    """Every family fitted on the examples at ``cutoffs``, scoring ``judged``."""
    train = fit_input(examples_df.where(F.col("as_of").isin(cutoffs))).persist()
    out = judged
    for family, model in fit_candidates(train, fits, cfg).items():
        out = predict(model, out, f"m_{family}")
    scores = _rows(out.select("customer_id", *[f"m_{f}_spend" for f in FAMILIES]))
    train.unpersist()
    return scores


def _backtest(spark, root):
    return _gold(spark, root, "clv_backtest").where(F.col("as_of") == F.lit(AS_OF)).collect()


def test_backtest_has_every_model_at_every_origin_with_intervals(spark, lake, runs):
    rows = _backtest(spark, lake["root"])
    models = {r["model"] for r in rows}
    assert {*FAMILIES, "seed_formula", "champion"} <= models
    for r in rows:
        assert r["horizon_days"] == 60
        if r["model"] == "champion":
            continue
        assert r["origin"] in (E, E2, None)
        for m in ("normalised_gini", "spearman", "top_decile_share", "tier_macro_f1"):
            assert r[f"{m}_low"] <= r[f"{m}_high"], (r["model"], m)
    by = {(r["model"], r["origin"]): r for r in rows}
    for family in FAMILIES:
        assert {(family, E), (family, E2), (family, None)} <= set(by)
        mean = by[(family, None)]["normalised_gini"]
        assert mean == pytest.approx((by[(family, E)]["normalised_gini"]
                                      + by[(family, E2)]["normalised_gini"]) / 2)
    assert by[("blend", E)]["customers"] == runs["third"].rows_in
    # the champion of the earlier runs was trained on labels up to E: judged at E only
    assert {r["origin"] for r in rows if r["model"] == "champion"} == {E}
    deciles = _gold(spark, lake["root"], "clv_backtest_deciles").where(
        (F.col("as_of") == F.lit(AS_OF)) & (F.col("model") == "blend")
        & (F.col("origin") == F.lit(AS_OF)))
    assert deciles.agg(F.sum("customers")).first()[0] == runs["third"].rows_in


def test_on_generated_data_dropout_is_identified_and_the_served_model_beats_the_baselines(
        spark, lake, runs):
    assert not any("do not identify" in n for n in runs["first"].notes)
    rows = _backtest(spark, lake["root"])
    # a new candidate is served on its mean over the origins; a kept champion on the origins it
    # is fairly judged on
    served = min((r for r in rows if "spend" in (r["served"] or "")),
                 key=lambda r: r["origin"] is not None)
    baselines = [r for r in rows if r["role"] == "baseline" and r["origin"] == served["origin"]]
    assert len(baselines) == 4
    for r in baselines:
        assert served["normalised_gini"] >= r["normalised_gini"], r["model"]
        assert served["tier_macro_f1"] >= r["tier_macro_f1"] - 0.05, r["model"]


def test_an_identical_rerun_registers_nothing_and_changes_nothing(runs):
    assert runs["skipped"].rows_out == {}
    assert any("nothing written" in n for n in runs["skipped"].notes)
    assert runs["skipped_versions"][0] == runs["skipped_versions"][1]
    assert any("not refitted" in n for n in runs["again"].notes)
    by_name = {}
    for r in runs["after_again"]:
        by_name.setdefault(r["name"], []).append(r["version"])
    n = [str(i) for i in range(1, len(FAMILIES) + 1)]
    assert by_name[SPEND_MODEL] == n and by_name[TIER_MODEL] == n


def test_each_family_is_registered_once_as_a_spend_and_a_tier_model(lake, runs):
    registry.configure(lake["root"], lake["cfg"])
    for name in (SPEND_MODEL, TIER_MODEL):
        families = [registry.version_tags(name, str(v))["family"]
                    for v in range(1, len(FAMILIES) + 1)]
        assert sorted(families) == sorted(FAMILIES)
        for v in range(1, len(FAMILIES) + 1):
            assert registry.version_tags(name, str(v))["labels_end"] == AS_OF


def test_the_champions_are_the_decisions_of_the_last_run(spark, lake, runs):
    root, cfg = lake["root"], lake["cfg"]
    registry.configure(root, cfg)
    notes = runs["third"].notes
    for name in (SPEND_MODEL, TIER_MODEL):
        line = next(n for n in notes if n.startswith(f"{name} 'champion': version"))
        assert line.split()[3] == registry.champion_version(name)


def test_the_served_predictions_are_those_of_the_saved_champions(spark, lake, runs):
    """The scoring reuses the models the run holds for the versions the aliases name; loaded
    from the registry, those versions give the same predictions (a family mapped to another
    family's version would not)."""
    root, cfg = lake["root"], lake["cfg"]
    registry.configure(root, cfg)
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", FACT))
    cancellations = lakehouse.read(spark, lakehouse.table_path(root, "silver", CANCELLATIONS))
    current, _ = examples(spark, History.of(fact, cancellations), [E], cfg)
    for name, prefix in ((SPEND_MODEL, "s"), (TIER_MODEL, "t")):
        current = predict(registry.load_spark_model(f"models:/{name}@{registry.CHAMPION}"),
                          current, prefix)
    want = current.select("customer_id", "s_spend", "s_p10", "s_p90", "t_tier")
    got = _gold(spark, root, "clv_predictions").where(F.col("as_of") == F.lit(AS_OF)).select(
        "customer_id", "predicted_spend", "predicted_spend_p10", "predicted_spend_p90",
        "predicted_tier")
    assert _rows(got) == _rows(want)


def test_predictions_come_from_the_champion_and_a_rollback_changes_the_next_scoring(
        spark, lake, runs, capsys):
    root, cfg = lake["root"], lake["cfg"]
    registry.configure(root, cfg)
    current = registry.champion_version(SPEND_MODEL)
    preds = _gold(spark, root, "clv_predictions").where(F.col("as_of") == F.lit(AS_OF))
    assert {r[0] for r in preds.select("spend_model_version").distinct().collect()} == {current}
    family = registry.version_tags(SPEND_MODEL, current)["family"]
    assert {r[0] for r in preds.select("spend_model_family").distinct().collect()} == {family}
    assert preds.count() == runs["third"].rows_in
    assert preds.where(F.col("actual_spend").isNull()).count() == 0
    assert preds.where(F.col("predicted_spend_p10") > F.col("predicted_spend_p90")).count() == 0
    other = "1" if current != "1" else "2"
    args = ["--lakehouse", root, *sum((["--set", s] for s in SETTINGS), [])]
    assert main(["models", "rollback", SPEND_MODEL, "--to", other, *args]) == 0
    assert main(["models", "rollback", SPEND_MODEL, "--to", "70", *args]) == 2
    assert "has no version 70" in capsys.readouterr().err
    assert main(["clv", "--as-of", AS_OF, "--backtest", "--use-champion", *args]) == 0
    preds = _gold(spark, root, "clv_predictions").where(F.col("as_of") == F.lit(AS_OF))
    assert {r[0] for r in preds.select("spend_model_version").distinct().collect()} == {other}
    assert preds.count() == runs["third"].rows_in
    assert main(["models", "list", *args]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith(SPEND_MODEL)]
    assert [line for line in listed if "champion" in line][0].split()[1] == f"v{other}"


def test_registered_models_pin_the_running_spark_and_mlflow_and_load_whole(lake, runs):
    """The requirements are given, not inferred (inference imports the model in a subprocess),
    and the registered model holds every step from the features on."""
    from pathlib import Path

    import mlflow
    import mlflow.pyfunc
    import mlflow.spark
    import pyspark

    registry.configure(lake["root"], lake["cfg"])
    for name in (SPEND_MODEL, TIER_MODEL):
        path = mlflow.pyfunc.get_model_dependencies(f"models:/{name}@{registry.CHAMPION}")
        pins = Path(path).read_text().split()
        assert f"pyspark=={pyspark.__version__}" in pins
        assert f"mlflow=={mlflow.__version__}" in pins
    model = mlflow.spark.load_model(f"models:/{SPEND_MODEL}/1")
    assert isinstance(model, PipelineModel)


def test_a_backtest_with_no_invoices_after_its_origin_is_refused_before_any_fit(spark, lake):
    """The generated history ends in December 2011: a backtest as of a later day has nothing
    to judge against, and says so (with the latest date that has a full horizon) at once."""
    with pytest.raises(InputError, match=r"origin 2012-01-15 is after the last invoice "
                                         r"\(2011-12-\d\d\).* on or before 2011-1[01]-\d\d"):
        clv(spark, lake["root"], lake["cfg"], as_of="2012-01-15", backtest=True)
