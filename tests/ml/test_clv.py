"""CLV features, labels and baselines on a hand-made fixture; backtest metrics against
independent implementations (NumPy, SciPy, scikit-learn)."""

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from custseg.config import load_config
from custseg.errors import InputError
from custseg.ml import backtest, clv
from custseg.stages.clv import plan
from custseg.transforms.history import History

CUTOFF = dt.date(2011, 3, 1)
FACT_SCHEMA = ("customer_id int, invoice_no string, stock_code string, country string, "
               "invoice_date timestamp, total_price double")


def _ts(text):
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def fixture(spark):
    rows = [
        # customer 1: two invoices on 1 Jan (one of two lines), one on 10 Feb; then after
        (1, "A", "P1", "UK", _ts("2011-01-01 10:00"), 60.0),
        (1, "A", "P2", "UK", _ts("2011-01-01 10:00"), 40.0),
        (1, "B", "P1", "UK", _ts("2011-01-01 15:00"), 50.0),
        (1, "C", "P3", "UK", _ts("2011-02-10 09:00"), 30.0),
        (1, "D", "P1", "UK", _ts("2011-03-01 00:00"), 200.0),   # on the cutoff: label
        (1, "E", "P1", "UK", _ts("2011-03-30 23:59"), 10.0),    # last minute of the horizon
        (1, "F", "P1", "UK", _ts("2011-03-31 00:00"), 999.0),   # after the horizon
        # customer 2: one purchase a minute before the cutoff, none after
        (2, "G", "P1", "France", _ts("2011-02-28 23:59"), 20.0),
        # customer 3: new after the cutoff, so not an example
        (3, "H", "P1", "UK", _ts("2011-03-05 12:00"), 80.0),
        # customer 4: one early purchase, a large one in the horizon
        (4, "I", "P4", "Germany", _ts("2010-12-15 08:00"), 600.0),
        (4, "J", "P4", "Germany", _ts("2011-03-10 08:00"), 700.0),
        # anonymous lines count for nobody
        (None, "K", "P1", "UK", _ts("2011-02-01 08:00"), 5000.0),
        (None, "L", "P1", "UK", _ts("2011-03-02 08:00"), 5000.0),
    ]
    fact = spark.createDataFrame(rows, FACT_SCHEMA)
    cancellations = spark.createDataFrame(
        [(1, _ts("2011-02-11 10:00"), -15.0), (1, _ts("2011-03-02 10:00"), -100.0)],
        "customer_id int, invoice_date timestamp, amount double")
    cfg = load_config(overrides=["clv.horizon_days=30", "clv.tier_cuts.mid=100",
                                 "clv.tier_cuts.high=500", "segment.windows_days=[30]"])
    out, fits = clv.examples(spark, History.of(fact, cancellations), [CUTOFF], cfg)
    return {r["customer_id"]: r.asDict() for r in out.collect()}, fits[CUTOFF]


def test_examples_are_customers_with_purchases_before_the_cutoff(fixture):
    rows, _ = fixture
    assert sorted(rows) == [1, 2, 4]


def test_features_use_only_transactions_before_the_cutoff(fixture):
    rows, _ = fixture
    one = rows[1]
    assert one["recency_days"] == 19          # 10 Feb to 1 Mar
    assert one["frequency"] == 3              # invoices A, B, C
    assert one["monetary"] == pytest.approx(180.0)
    assert one["tenure_days"] == 59           # 1 Jan to 1 Mar
    assert one["return_rate"] == pytest.approx(15.0 / 180.0)  # the 2 Mar return is later
    assert one["repeat_purchases"] == 1       # purchase days 1 Jan and 10 Feb
    assert one["repeat_span_days"] == 40
    assert one["age_days"] == 59
    assert one["repeat_spend"] == pytest.approx(30.0)   # 10 Feb only; the first day is left out
    assert one["max_day_spend"] == pytest.approx(150.0)   # 1 Jan: invoices A and B
    assert one["overdue"] == pytest.approx(19 / 20)      # 19 days since; 40 days / 2 gaps
    assert one["recency_share"] == pytest.approx(19 / 59)
    assert one["actual_purchases"] == 2                  # 1 Mar and 30 Mar
    assert one["frequency_30d"] == 1 and one["monetary_30d"] == pytest.approx(30.0)
    two = rows[2]
    assert (two["recency_days"], two["repeat_purchases"], two["age_days"]) == (1, 0, 1)
    assert two["repeat_spend"] is None


def test_label_is_spend_in_the_horizon_and_tier_from_the_cuts(fixture):
    rows, _ = fixture
    assert rows[1]["actual_spend"] == pytest.approx(210.0)   # D and E; F is after the horizon
    assert rows[1]["actual_tier"] == "Mid"
    assert rows[2]["actual_spend"] == 0.0
    assert rows[2]["actual_tier"] == "Low"
    assert rows[4]["actual_spend"] == pytest.approx(700.0)
    assert rows[4]["actual_tier"] == "High"


def test_simple_baselines_by_hand(fixture):
    rows, _ = fixture
    assert rows[1]["past_spend_rate"] == pytest.approx(180.0 / 59 * 30)
    assert rows[2]["past_spend_rate"] == pytest.approx(20.0 / 30 * 30)   # tenure under a horizon
    assert rows[4]["past_spend_rate"] == pytest.approx(600.0 / 76 * 30)
    # 5 orders over 3 customers in a 76-day period; repeat rate 1/3 -> lifespan 114 days,
    # capped at the 30-day horizon
    per_day = (5 / 3) / 76
    assert rows[1]["seed_formula"] == pytest.approx(60.0 * per_day * 30)
    assert rows[4]["seed_formula"] == pytest.approx(600.0 * per_day * 30)


def test_probabilistic_columns_follow_the_fits(fixture):
    rows, fits = fixture
    from custseg.ml import btyd

    one = rows[1]
    args = np.array([1.0]), np.array([40.0]), np.array([59.0])
    want = btyd.bgnbd_expected(fits.bgnbd.values(), 30, *args)[0]
    assert one["bgnbd_purchases"] == pytest.approx(want, rel=1e-9)
    p, q, v = fits.gammagamma.values()
    assert one["gg_spend_per_purchase"] == pytest.approx(p * (v + 30.0) / (p + q - 1))
    assert one["bgnbd_gg"] == pytest.approx(one["bgnbd_purchases"] * one["gg_spend_per_purchase"])
    assert rows[2]["gg_spend_per_purchase"] == pytest.approx(fits.population_spend)


def test_plan_trains_each_origin_on_cutoffs_before_it():
    first = dt.date(2010, 12, 1)
    clv_cfg = load_config()["clv"]
    p = plan(first, dt.date(2011, 9, 1), 100, clv_cfg, backtest=True)
    assert p.origins == (dt.date(2011, 9, 1), dt.date(2011, 8, 2), dt.date(2011, 7, 3))
    # every 30 days back from origin - horizon while 21 days of history precede the cutoff
    assert p.cutoffs[dt.date(2011, 9, 1)] == (
        dt.date(2011, 5, 24), dt.date(2011, 4, 24), dt.date(2011, 3, 25), dt.date(2011, 2, 23),
        dt.date(2011, 1, 24), dt.date(2010, 12, 25))
    assert p.cutoffs[dt.date(2011, 7, 3)] == (
        dt.date(2011, 3, 25), dt.date(2011, 2, 23), dt.date(2011, 1, 24), dt.date(2010, 12, 25))
    for origin, cutoffs in p.cutoffs.items():
        assert all(c + dt.timedelta(days=100) <= origin for c in cutoffs)
    # without --backtest the first origin is one horizon before the as-of date
    assert plan(first, dt.date(2011, 12, 10), 90, clv_cfg, backtest=False).origins[0] == \
        dt.date(2011, 9, 11)


def test_plan_leaves_out_origins_without_history_and_refuses_when_e_has_none():
    first = dt.date(2010, 12, 1)
    clv_cfg = load_config()["clv"]
    p = plan(first, dt.date(2011, 5, 10), 100, clv_cfg, backtest=True)
    # E - 60 = 2011-03-11 would need a cutoff on or before 2010-12-01, 21 days after the
    # first invoice at the earliest (2010-12-22)
    assert p.origins == (dt.date(2011, 5, 10), dt.date(2011, 4, 10))
    assert p.cutoffs[dt.date(2011, 4, 10)] == (dt.date(2010, 12, 31),)
    assert any("origin 2011-03-11 left out" in n for n in p.notes)
    with pytest.raises(InputError, match="not enough history.*first invoice is on 2010-12-01"):
        plan(first, dt.date(2011, 3, 1), 100, clv_cfg, backtest=True)


def _kaggle_gini(actual, pred):
    order = np.argsort(-pred, kind="stable")
    a = actual[order]
    n = len(a)
    return (np.cumsum(a).sum() / a.sum() - (n + 1) / 2.0) / n


def test_spend_metrics_match_numpy_and_scipy(spark):
    rng = np.random.default_rng(5)
    n = 400
    actual = np.where(rng.uniform(size=n) < 0.4, 0.0, rng.lognormal(5, 1.2, n))
    pred = actual * rng.lognormal(0, 0.8, n) + rng.uniform(0, 50, n)
    df = spark.createDataFrame([(float(p), float(a)) for p, a in zip(pred, actual, strict=True)],
                               "p double, actual_spend double")
    m = backtest.spend_metrics(df, "p")
    assert m.customers == n
    assert m.rmse == pytest.approx(np.sqrt(np.mean((pred - actual) ** 2)))
    assert m.mae == pytest.approx(np.mean(np.abs(pred - actual)))
    assert m.spearman == pytest.approx(spearmanr(pred, actual).statistic, abs=1e-9)
    # actual has ties (the zeros) but they carry no spend, so sorting them is immaterial
    want = _kaggle_gini(actual, pred) / _kaggle_gini(actual, actual)
    assert m.normalised_gini == pytest.approx(want, abs=1e-9)
    top = np.argsort(-pred)[: n // 10]
    assert m.top_decile_share == pytest.approx(actual[top].sum() / actual.sum(), abs=1e-9)
    assert [d["customers"] for d in m.deciles] == [40] * 10
    first = np.argsort(-pred)[:40]
    assert m.deciles[0]["mean_actual"] == pytest.approx(actual[first].mean())
    assert m.deciles[0]["mean_predicted"] == pytest.approx(pred[first].mean())


def test_tied_predictions_share_their_spend_evenly(spark):
    """Four customers all predicted 1.0: no ranking information, Gini 0 and the top 10%
    captures 10% of the spend."""
    df = spark.createDataFrame([(1.0, 10.0), (1.0, 0.0), (1.0, 30.0), (1.0, 0.0)],
                               "p double, actual_spend double")
    m = backtest.spend_metrics(df, "p")
    assert m.normalised_gini == pytest.approx(0.0)
    assert m.top_decile_share == pytest.approx(0.1)
    assert m.spearman is None  # a constant prediction has no rank correlation


def test_tier_metrics_match_scikit_learn(spark):
    rng = np.random.default_rng(2)
    tiers = np.array(["Low", "Mid", "High"])
    actual = tiers[rng.choice(3, 300, p=[0.6, 0.3, 0.1])]
    pred = np.where(rng.uniform(size=300) < 0.7, actual, tiers[rng.choice(3, 300)])
    df = spark.createDataFrame(list(zip(actual.tolist(), pred.tolist(), strict=True)),
                               "actual_tier string, p string")
    m = backtest.tier_metrics(df, "p")
    assert m.accuracy == pytest.approx(accuracy_score(actual, pred))
    assert m.macro_f1 == pytest.approx(f1_score(actual, pred, average="macro"))
    cm = confusion_matrix(actual, pred, labels=list(tiers))
    for i, a in enumerate(tiers):
        for j, p in enumerate(tiers):
            assert m.confusion.get((a, p), 0) == cm[i, j]


def test_tier_of_uses_the_configured_cuts(spark):
    df = spark.createDataFrame([(0.0,), (99.99,), (100.0,), (499.0,), (500.0,)], "s double")
    got = [r[0] for r in df.select(clv.tier_of(F.col("s"), {"mid": 100, "high": 500})).collect()]
    assert got == ["Low", "Low", "Mid", "Mid", "High"]


def test_even_cuts_equal_percentile_approx_with_a_python_list(spark):
    from custseg.ml.quantiles import even_cuts

    df = spark.createDataFrame([(float(x * x % 97),) for x in range(500)], "v double")
    for parts in (4, 10, 1000):
        listed = [i / parts for i in range(1, parts)]
        expected = df.agg(F.percentile_approx("v", listed, 5000)).first()[0]
        assert df.agg(even_cuts(F.col("v"), parts, 5000)).first()[0] == expected


def test_bucketizer_buckets_as_numpy_and_sends_its_splits_at_once(spark, monkeypatch):
    import py4j.clientserver

    from custseg.ml.quantiles import bucketizer

    fine = [-np.inf, *np.linspace(-50.0, 50.0, 999).tolist(), np.inf]
    splits = [[-np.inf, -2.5, -0.0, 1e-05, 3.0, 1e22, np.inf], [-np.inf, 10.0, np.inf], fine]
    values = [-1e300, -2.5, -2.4999999999999996, -0.0, 0.0, 1e-05, 2.9999999999999996, 3.0,
              0.1 + 0.2, 1e22, 1e300, 10.0, -50.0, 49.9]
    df = spark.createDataFrame([(v, v, v) for v in values], "a double, b double, c double")
    calls = []
    send = py4j.clientserver.ClientServerConnection.send_command
    monkeypatch.setattr(py4j.clientserver.ClientServerConnection, "send_command",
                        lambda self, command: calls.append(1) or send(self, command))
    bucketed = bucketizer(splits, ["a", "b", "c"], ["ba", "bb", "bc"]).transform(df)
    monkeypatch.undo()
    assert len(calls) < 50  # a Python list param costs a call per number: over 1,000 here
    got = bucketed.select("ba", "bb", "bc").collect()

    def java_order(x):
        # doubles as int64 keys in Java's Double.compare order (-0.0 below 0.0), the order of
        # the binary search that Bucketizer runs
        bits = np.asarray(x, dtype=float).view(np.int64)
        return bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))

    for i, column in enumerate(splits):
        # the bucket of a value: the last split at or below it
        want = np.searchsorted(java_order(column), java_order(values), side="right") - 1
        assert [int(r[i]) for r in got] == want.tolist(), i


def _gg_bins(p: float, q: float, v: float, n: int = 20_000, seed: int = 3):
    """Mean repeat spend of simulated Gamma-Gamma customers, binned as the clv stage bins it,
    and their unbinned mean."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.integers(1, 6, n)
    nu = rng.gamma(q, 1.0 / v, n)
    m = np.array([rng.gamma(p, 1.0 / nu_i, k).mean() for nu_i, k in zip(nu, x, strict=True)])
    df = pd.DataFrame({"repeat_purchases": x, "bin": np.round(np.log(m) * 1000.0)})
    return df.groupby(["repeat_purchases", "bin"]).size().rename("count").reset_index(), m


def test_one_time_buyers_spend_the_model_mean_only_when_its_variance_is_finite():
    bins, _ = _gg_bins(6.0, 4.0, 15.0)                  # E[spend] = p v / (q - 1) = 30
    _, population = clv.gammagamma_fit(bins)
    assert population == pytest.approx(30.0, rel=0.05)
    bins, m = _gg_bins(6.0, 1.5, 15.0)                  # q <= 2: a tail with no variance
    fit, population = clv.gammagamma_fit(bins)
    assert fit.params["q"] < 2.0
    assert population == pytest.approx(m.mean(), rel=0.002)  # what the customers spent
