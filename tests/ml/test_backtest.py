"""Backtest metrics and their bootstrap intervals against NumPy on a fixture: point values
exactly, intervals against an independent bootstrap that re-ranks every draw."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import f1_score

from custseg.ml.backtest import Bootstrap, draw_weights, evaluate

N = 600
TIERS = np.array(["Low", "Mid", "High"])


def _tier(v):
    return TIERS[np.where(v >= 2000, 2, np.where(v >= 500, 1, 0))]


@pytest.fixture(scope="module")
def fixture(spark):
    rng = np.random.default_rng(11)
    actual = np.where(rng.uniform(size=N) < 0.45, 0.0, rng.lognormal(6.0, 1.3, N))
    pred = np.exp(0.6 * np.log1p(actual) + rng.normal(0, 1.0, N) + 3.0)
    rows = [(i, float(p), float(a), str(_tier(np.array([p]))[0]), str(_tier(np.array([a]))[0]))
            for i, (p, a) in enumerate(zip(pred, actual, strict=True))]
    df = spark.createDataFrame(rows, "customer_id int, p double, actual_spend double, "
                                     "p_tier string, actual_tier string").persist()
    return df, pred, actual


def _wrank(v, w):
    """Weighted mid-rank fractions (ties share the mean rank of their weight)."""
    order = np.argsort(v, kind="stable")
    values, weights = v[order], w[order]
    cum = np.cumsum(weights)
    out = np.empty(len(v))
    _, start = np.unique(values, return_index=True)
    end = np.r_[start[1:], len(values)]
    for s, e in zip(start, end, strict=True):
        below = cum[s - 1] if s else 0.0
        out[order[s:e]] = (below + (cum[e - 1] - below) / 2.0) / cum[-1]
    return out


def _metrics(pred, actual, w):
    """Normalised Gini, Spearman, top-decile share, macro-F1 of one weighted sample."""
    def gini(score):
        return 2.0 * np.sum(w * actual * _wrank(score, w)) / np.sum(w * actual) - 1.0

    fp, fa = _wrank(pred, w), _wrank(actual, w)
    mp, ma = np.average(fp, weights=w), np.average(fa, weights=w)
    rho = np.sum(w * (fp - mp) * (fa - ma)) / np.sqrt(
        np.sum(w * (fp - mp) ** 2) * np.sum(w * (fa - ma) ** 2))
    order = np.argsort(-pred)
    weight = w[order] / w.sum()
    before = np.cumsum(weight) - weight
    inside = np.clip(np.divide(0.1 - before, weight, out=np.zeros(N), where=weight > 0), 0, 1)
    top = np.sum(w[order] * actual[order] * inside) / np.sum(w * actual)
    f1 = f1_score(_tier(actual), _tier(pred), average="macro", sample_weight=w)
    return np.array([gini(pred) / gini(actual), rho, top, f1])


def test_point_metrics_match_numpy_scipy_and_scikit_learn(spark, fixture):
    df, pred, actual = fixture
    s = evaluate(df, {"m": ("p", "p_tier")}, Bootstrap(draws=0))["m"].metrics
    gini, _, top, f1 = _metrics(pred, actual, np.ones(N))
    assert s["normalised_gini"] == pytest.approx(gini, abs=1e-9)
    assert s["spearman"] == pytest.approx(spearmanr(pred, actual).statistic, abs=1e-9)
    assert s["top_decile_share"] == pytest.approx(top, abs=1e-9)
    assert s["tier_macro_f1"] == pytest.approx(f1, abs=1e-9)
    assert s["predicted_total"] == pytest.approx(pred.sum())
    assert s["actual_total"] == pytest.approx(actual.sum())


def test_bootstrap_intervals_match_a_numpy_bootstrap_that_reranks_every_draw(spark, fixture):
    df, pred, actual = fixture
    s = evaluate(df, {"m": ("p", "p_tier")}, Bootstrap(draws=400, seed=3))["m"]
    rng = np.random.default_rng(5)
    draws = np.array([_metrics(pred, actual, rng.poisson(1.0, N).astype(float))
                      for _ in range(2000)])
    for i, name in enumerate(("normalised_gini", "spearman", "top_decile_share",
                              "tier_macro_f1")):
        ours = np.quantile(s.draws[name], [0.05, 0.95])
        theirs = np.quantile(draws[:, i], [0.05, 0.95])
        sd = draws[:, i].std()
        # 400 against 2,000 draws: the 5% and 95% points agree to about a tenth of an SD
        assert np.abs(ours - theirs).max() < 0.4 * sd, (name, ours, theirs, sd)
        assert s.draws[name].std() == pytest.approx(sd, rel=0.2)


def test_each_draw_ranks_its_own_resample_again(spark, fixture):
    """Draw b's Gini, top-decile share and macro-F1 are NumPy's on the customers weighted by
    draw b's Poisson weights (read back from Spark, the zero weights with the rest)."""
    df, pred, actual = fixture
    boot = Bootstrap(draws=25, seed=3)
    s = evaluate(df, {"m": ("p", "p_tier")}, boot)["m"]
    w = np.zeros((boot.draws, N))
    for r in draw_weights(df.select("customer_id"), boot).collect():  # 25 x 600 rows
        w[r["_draw"], r["customer_id"]] = r["_w"]
    assert (w == 0).mean() == pytest.approx(np.exp(-1.0), abs=0.02)
    for b in range(boot.draws):
        gini, _, top, f1 = _metrics(pred, actual, w[b])
        assert s.draws["normalised_gini"][b] == pytest.approx(gini, abs=1e-9), b
        assert s.draws["top_decile_share"][b] == pytest.approx(top, abs=1e-9), b
        assert s.draws["tier_macro_f1"][b] == pytest.approx(f1, abs=1e-9), b


def test_draws_on_a_sample_are_scaled_to_the_whole(spark, fixture):
    df, pred, actual = fixture
    full = evaluate(df, {"m": ("p", "p_tier")}, Bootstrap(draws=300, seed=3))["m"]
    part = evaluate(df, {"m": ("p", "p_tier")}, Bootstrap(draws=300, seed=3, sample=300))["m"]
    for name in ("spearman", "tier_macro_f1"):
        # centred on the whole sample's value, with the whole sample's spread
        assert np.mean(part.draws[name]) == pytest.approx(full.metrics[name], abs=1e-9)
        assert 0.6 < part.draws[name].std() / full.draws[name].std() < 1.6
