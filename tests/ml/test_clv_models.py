"""The candidate models on hand-made and simulated data: the hurdle multiplies in money, the
BTYD model applies its fitted parameters, and the 80% interval holds 80% of simulated
customers drawn from known BG/NBD and Gamma-Gamma parameters."""

import datetime as dt

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from custseg.config import load_config
from custseg.ml import btyd
from custseg.ml.clv import KEY, BtydFits, model_features, purchase_summary, spend_in
from custseg.ml.clv_models import BtydSpend, fit_hurdle, fit_input, fit_intervals, max_bins
from custseg.transforms.history import dates_frame

CFG = load_config(overrides=["clv.gbt.max_iter=5", "clv.gbt.min_instances_per_node=5",
                             "clv.gbt.step_size=0.5"])


def _examples(spark, groups):
    """Training examples whose features are all 0 but ``recency_days``, the group."""
    names = [c for c in model_features(CFG) if c not in KEY]
    schema = ("customer_id int, as_of date, country string, actual_spend double, "
              "repeat_purchases int, repeat_span_days int, age_days int, repeat_spend double, "
              + ", ".join(f"{c} double" for c in names))
    rows = [(i, dt.date(2011, 1, 1), "UK", float(spend), 0, 0, 0, None,
             *[float(group) if c == "recency_days" else 0.0 for c in names])
            for i, (group, spend) in enumerate(groups)]
    return spark.createDataFrame(rows, schema)


@pytest.fixture(scope="module")
def hurdle(spark):
    # group 0 never buys; in group 1 half buy, 100 or 400 in equal numbers: P(buy) 0.5,
    # spend of buyers 250 on average (a log-scale model alone would give their geometric
    # mean, 200), so the expected spend is 125
    groups = [(0, 0.0)] * 100 + [(1, 0.0)] * 100 + [(1, 100.0)] * 50 + [(1, 400.0)] * 50
    train = fit_input(_examples(spark, groups)).persist()
    yield train, fit_hurdle(train, CFG, max_bins(train))
    train.unpersist()


def test_the_hurdle_multiplies_in_money_the_chance_to_buy_and_the_mean_spend(hurdle):
    train, stages = hurdle
    model = PipelineModel(stages=stages)
    scored = model.transform(train).groupBy("recency_days").agg(
        F.avg("gbt_spend").alias("spend"), F.avg("_buy_p").alias("p"),
        F.avg(F.exp("_log_amount")).alias("median_amount")).collect()
    got = {r["recency_days"]: r for r in scored}
    assert got[1.0]["p"] == pytest.approx(0.5, abs=0.05)
    assert got[1.0]["median_amount"] == pytest.approx(200.0, rel=0.05)
    # the smearing factor: the mean of 100/200 and 400/200
    assert got[1.0]["spend"] / (got[1.0]["p"] * got[1.0]["median_amount"]) == \
        pytest.approx(1.25, rel=1e-6)
    assert got[1.0]["spend"] == pytest.approx(125.0, rel=0.1)
    assert got[0.0]["spend"] < 0.1 * 125


def test_the_hurdle_trees_are_wrapped_in_python_only_when_read(hurdle):
    # pyspark 4.1 wraps every tree of a GBT model as the model is made (some hundred py4j
    # calls a tree); the hurdle's two models wrap them when they are read
    gbts = [s for s in hurdle[1] if hasattr(s, "treeWeights")]
    assert len(gbts) == 2
    for model in gbts:
        assert "trees" not in vars(model), type(model).__name__
        trees = model.trees
        assert len(trees) == model.getNumTrees == CFG["clv"]["gbt"]["max_iter"]
        assert sum(t.numNodes for t in trees) == model.totalNumNodes


def _simulate(n, seed):
    """BG/NBD customers (all starting on day 0) with Gamma-Gamma spend, as invoice rows:
    frequent buyers who seldom leave, so that few are sure to spend nothing in the horizon
    (where they are, no interval can hold fewer than all of them)."""
    r, alpha, a, b = 3.0, 15.0, 0.3, 30.0
    p, q, v = 6.0, 4.0, 15.0
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(n):
        rate = rng.gamma(r, 1.0 / alpha)
        drop = rng.beta(a, b)
        nu = rng.gamma(q, 1.0 / v)
        day = 0.0
        alive = True
        while alive:
            rows.append((customer, day, rng.gamma(p, 1.0 / nu)))
            day += rng.exponential(1.0 / rate)
            alive = day < 400 and rng.uniform() > drop
    params = {"bgnbd": (r, alpha, a, b), "gammagamma": (p, q, v)}
    return rows, params


def test_the_interval_holds_80_percent_of_customers_simulated_from_known_parameters(spark):
    rows, params = _simulate(3000, 4)
    start = dt.datetime(2011, 1, 1)
    invoices = spark.createDataFrame(
        [(c, f"{c}-{i}", start + dt.timedelta(days=int(d)), "UK", 1, float(s))
         for i, (c, d, s) in enumerate(rows)],
        "customer_id int, invoice_no string, invoice_date timestamp, country string, "
        "lines long, total double")
    calibrate, judged = dt.date(2011, 4, 1), dt.date(2011, 7, 1)
    days = dates_frame(spark, [calibrate, judged])
    df = (purchase_summary(invoices, days)
          .join(spend_in(invoices, days, 60), ["as_of", "customer_id"], "left")
          .fillna({"actual_spend": 0.0}))
    gg = btyd.Fit("gammagamma", dict(zip("pqv", params["gammagamma"], strict=True)), 0, 0, 0,
                  True)
    fits = BtydFits(btyd.Fit("bgnbd", dict(zip(("r", "alpha", "a", "b"), params["bgnbd"],
                                                strict=True)), 0, 0, 0, True), None, gg,
                    params["gammagamma"][0] * params["gammagamma"][2]
                    / (params["gammagamma"][1] - 1))
    model = BtydSpend.of(fits, "bgnbd", 60, "predicted_spend")
    scored = model.transform(df).persist()
    interval = fit_intervals(scored.where(F.col("as_of") == F.lit(calibrate)),
                             {"m": "predicted_spend"})["m"]
    later = interval.transform(scored.where(F.col("as_of") == F.lit(judged)))
    inside = later.agg(F.avg(((F.col("actual_spend") >= F.col("predicted_spend_p10"))
                              & (F.col("actual_spend") <= F.col("predicted_spend_p90")))
                             .cast("double"))).first()[0]
    assert 0.75 <= inside <= 0.85
    scored.unpersist()


def test_a_model_saved_before_the_layered_layout_still_loads(spark, tmp_path):
    """Pipelines registered before lib/custseg had layers name their Python stages
    ``custseg.clv_models.*``; a rollback to one of those versions must still load it."""
    from pyspark.ml.linalg import Vectors

    from custseg.ml.clv_models import VectorElement

    path = str(tmp_path / "old")
    PipelineModel(stages=[VectorElement(inputCol="v", outputCol="p", index=1)]).save(path)
    (meta,) = (tmp_path / "old" / "stages").glob("*VectorElement*/metadata/part-*")
    text = meta.read_text()
    assert '"custseg.ml.clv_models.VectorElement"' in text
    meta.write_text(text.replace("custseg.ml.clv_models.", "custseg.clv_models."))
    meta.with_name(f".{meta.name}.crc").unlink()  # the local file system's checksum of the old text
    loaded = PipelineModel.load(path)
    df = spark.createDataFrame([(Vectors.dense([0.25, 0.75]),)], ["v"])
    assert loaded.transform(df).first()["p"] == 0.75
