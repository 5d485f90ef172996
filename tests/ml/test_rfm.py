"""RFM features, scores and segments on tiny fixtures worked out by hand."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from custseg.config import load_config
from custseg.ml.rfm import (
    RfmScorer,
    RfmScores,
    customer_features,
    rfm_pipeline,
    score_cut_points,
    segment_expr,
    tier_expr,
)

FACT_SCHEMA = ("invoice_no string, stock_code string, invoice_date timestamp, "
               "customer_id int, country string, total_price double")
CANCEL_SCHEMA = "invoice_date timestamp, customer_id int, amount double"
AS_OF = dt.date(2011, 1, 20)


def ts(day, hour=10, minute=0):
    return dt.datetime(2011, 1, day, hour, minute)


@pytest.fixture(scope="module")
def features(spark):
    fact = spark.createDataFrame([
        ("A", "p1", ts(1), 1, "UK", 4.0),
        ("A", "p2", ts(1), 1, "UK", 6.0),
        ("B", "p1", ts(10), 1, "UK", 5.0),
        ("C", "p3", ts(19, 23, 59), 2, "France", 100.0),
        ("D", "p1", ts(5), 3, "UK", 7.0),
        ("E", "p1", ts(20, 0, 0), 3, "UK", 50.0),   # on the as-of date: excluded
        ("F", "p1", ts(25), 4, "UK", 9.0),          # after: customer 4 absent
        ("G", "p1", ts(2), None, "UK", 3.0),        # anonymous: absent
    ], FACT_SCHEMA)
    cancels = spark.createDataFrame([
        (ts(12), 1, -3.0),
        (ts(21), 1, -6.0),                          # after the as-of date: ignored
    ], CANCEL_SCHEMA)
    rows = customer_features(fact, cancels, AS_OF, [7, 30]).collect()
    return {r["customer_id"]: r for r in rows}


def test_customers_with_purchases_before_as_of_only(features):
    assert set(features) == {1, 2, 3}


def test_recency_frequency_monetary(features):
    c1, c2, c3 = features[1], features[2], features[3]
    assert (c1["recency_days"], c1["frequency"], c1["monetary"]) == (10, 2, 15.0)
    assert (c2["recency_days"], c2["frequency"], c2["monetary"]) == (1, 1, 100.0)
    assert (c3["recency_days"], c3["frequency"], c3["monetary"]) == (15, 1, 7.0)


def test_model_features(features):
    c1 = features[1]
    assert c1["tenure_days"] == 19
    assert c1["avg_order_value"] == pytest.approx(7.5)
    assert c1["distinct_products"] == 2
    assert c1["days_between_purchases"] == pytest.approx(9.0)
    assert c1["return_rate"] == pytest.approx(3.0 / 15.0)
    assert features[2]["days_between_purchases"] is None
    assert features[2]["return_rate"] == 0.0
    assert features[2]["country"] == "France"
    assert features[1]["as_of"] == AS_OF


def test_windows(features):
    c1, c2 = features[1], features[2]
    assert (c1["frequency_7d"], c1["monetary_7d"]) == (0, 0.0)
    assert (c1["frequency_30d"], c1["monetary_30d"]) == (2, 15.0)
    assert (c2["frequency_7d"], c2["monetary_7d"]) == (1, 100.0)


def _scores(spark, values):
    df = spark.createDataFrame(
        [(i, float(v), v, float(v)) for i, v in enumerate(values)],
        "customer_id int, recency_days double, frequency int, monetary double")
    model = RfmScorer(accuracy=100000).fit(df)
    rows = model.transform(df).orderBy("customer_id").collect()
    return model, rows


def test_scores_distinct_values(spark):
    cuts, rows = _scores(spark, list(range(1, 11)))
    assert cuts.getOrDefault(cuts.frequencyCuts) == [2.0, 4.0, 6.0, 8.0]
    # 1 + cut points strictly below the value; recency reversed (6 minus that)
    assert [r["f_score"] for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [r["r_score"] for r in rows] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert rows[0]["rfm_score"] == "511"


def test_scores_ties_share_a_score(spark):
    cuts, rows = _scores(spark, [1, 1, 1, 1, 1, 1, 2, 3, 4, 5])
    assert cuts.getOrDefault(cuts.frequencyCuts) == [1.0, 1.0, 1.0, 3.0]
    assert [r["f_score"] for r in rows] == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]
    assert [r["r_score"] for r in rows] == [5, 5, 5, 5, 5, 5, 2, 2, 1, 1]


EXPECTED_MAP = {  # the table, written out pair by pair
    (5, 4): "Champions", (5, 5): "Champions",
    (3, 4): "Loyal Customers", (3, 5): "Loyal Customers", (4, 4): "Loyal Customers",
    (4, 5): "Loyal Customers",
    (4, 2): "Potential Loyalists", (4, 3): "Potential Loyalists", (5, 2): "Potential Loyalists",
    (5, 3): "Potential Loyalists",
    (5, 1): "New Customers", (4, 1): "Promising", (3, 3): "Need Attention",
    (3, 1): "About To Sleep", (3, 2): "About To Sleep",
    (1, 3): "At Risk", (1, 4): "At Risk", (2, 3): "At Risk", (2, 4): "At Risk",
    (1, 5): "Cannot Lose Them", (2, 5): "Cannot Lose Them",
    (1, 1): "Hibernating", (1, 2): "Hibernating", (2, 1): "Hibernating", (2, 2): "Hibernating",
}


def test_all_25_rf_pairs(spark):
    cfg = load_config()
    pairs = spark.createDataFrame([(r, f) for r in range(1, 6) for f in range(1, 6)],
                                  "r_score int, f_score int")
    got = {(row["r_score"], row["f_score"]): row["segment"] for row in
           pairs.withColumn("segment", segment_expr(cfg["segment"]["segments"])).collect()}
    assert len(EXPECTED_MAP) == 25
    assert got == EXPECTED_MAP


def test_value_tiers(spark):
    cfg = load_config()
    df = spark.createDataFrame([(m,) for m in range(1, 6)], "m_score int")
    got = [r["t"] for r in df.withColumn("t", tier_expr(cfg["segment"]["value_tiers"]))
           .orderBy("m_score").collect()]
    assert got == ["Low", "Low", "Mid", "Mid", "High"]


def test_cut_points_never_sort_globally(spark):
    df = spark.range(1000).select(F.col("id").cast("int").alias("frequency"),
                                  F.col("id").cast("double").alias("recency_days"),
                                  F.col("id").cast("double").alias("monetary"))
    for scored in (score_cut_points(df, 1000), RfmScorer(accuracy=1000).fit(df).transform(df)):
        assert "Sort [" not in scored._jdf.queryExecution().executedPlan().toString()


def test_the_rfm_pipeline_saves_and_loads_with_its_cut_points_and_maps(spark, tmp_path):
    from pyspark.ml import PipelineModel

    df = spark.createDataFrame(
        [(i, float(11 - v), v, float(v)) for i, v in enumerate(range(1, 11))],
        "customer_id int, recency_days double, frequency int, monetary double")
    fitted = rfm_pipeline(load_config()).fit(df)
    fitted.save(str(tmp_path / "rfm"))
    loaded = PipelineModel.load(str(tmp_path / "rfm"))
    assert isinstance(loaded.stages[0], RfmScores)
    rows = loaded.transform(df).orderBy("customer_id").collect()
    # recency 10..1 with cuts 2,4,6,8 gives R 1,1,2,2,...,5,5; F and M as the scores test
    assert [(r["r_score"], r["f_score"]) for r in rows[:2]] == [(1, 1), (1, 1)]
    assert [r["segment"] for r in rows] == [EXPECTED_MAP[(r["r_score"], r["f_score"])]
                                            for r in rows]
    assert rows[-1]["segment"] == "Champions" and rows[-1]["value_tier"] == "High"
