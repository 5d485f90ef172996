"""BG/NBD, Pareto/NBD and Gamma-Gamma: likelihoods and expectations checked by integration,
fits against the published CDNOW figures, simulation recovery and the no-dropout boundary."""

import importlib.util
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from custseg.ml import btyd


def _cdnow(name):
    spec = importlib.util.find_spec("lifetimes")  # test-only dependency; only its data is read
    assert spec is not None, "pip install lifetimes (a dev extra) for the CDNOW summary data"
    return pd.read_csv(os.path.join(spec.submodule_search_locations[0], "datasets", name))


class _Gamma:
    """The gamma density of shape ``r`` and rate ``alpha`` from its formula, for one float at
    a time: scipy.stats' per-call overhead made the 2-D integrals take 30 s instead of 0.3."""

    def __init__(self, r, alpha):
        self.r, self.alpha = r, alpha
        self.log_c = r * math.log(alpha) - math.lgamma(r)

    def pdf(self, v):
        return math.exp(self.log_c + (self.r - 1) * math.log(v) - self.alpha * v) if v > 0 else 0.0


def test_the_gamma_density_is_scipys():
    for r, alpha in ((0.55, 10.6), (4.0, 20.0)):
        want = stats.gamma(a=r, scale=1.0 / alpha)
        for v in (1e-9, 0.01, 0.3, 5.0):
            assert _Gamma(r, alpha).pdf(v) == pytest.approx(want.pdf(v), rel=1e-12)
        assert _Gamma(r, alpha).pdf(0.0) == 0.0


def test_bgnbd_likelihood_equals_its_beta_function_form():
    r, alpha, a, b = 0.5, 3.0, 0.7, 2.2
    x = np.array([0.0, 1, 4]), np.array([0.0, 5, 20]), np.array([30.0, 30, 25])
    got = np.exp(btyd.bgnbd_log_likelihood((r, alpha, a, b), *x))
    for i in range(3):
        xi, txi, Ti = x[0][i], x[1][i], x[2][i]
        head = special.gamma(r + xi) * alpha**r / special.gamma(r)
        want = special.beta(a, b + xi) / special.beta(a, b) * head / (alpha + Ti) ** (r + xi)
        if xi > 0:
            want += (special.beta(a + 1, b + xi - 1) / special.beta(a, b) * head
                     / (alpha + txi) ** (r + xi))
        assert got[i] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("params", [(0.6, 8.0, 0.9, 4.0), (0.6, 4.0, 0.9, 8.0)])
def test_paretonbd_likelihood_equals_integral_over_lambda_and_mu(params):
    """Both hypergeometric branches (alpha >= beta and alpha < beta) against a 2-D integral."""
    r, alpha, s, beta = params
    glam, gmu = _Gamma(r, alpha), _Gamma(s, beta)
    for x, t_x, T in [(0, 0.0, 20.0), (3, 12.0, 20.0)]:
        def individual(mu, lam, x=x, t_x=t_x, T=T):
            like = (lam**x * mu / (lam + mu) * np.exp(-(lam + mu) * t_x)
                    + lam ** (x + 1) / (lam + mu) * np.exp(-(lam + mu) * T))
            return like * glam.pdf(lam) * gmu.pdf(mu)

        want, _ = integrate.dblquad(individual, 0, np.inf, 0, np.inf, epsabs=1e-13)
        got = np.exp(btyd.paretonbd_log_likelihood(params, np.array([x]), np.array([t_x]),
                                                   np.array([T])))[0]
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("loglik, params, distinct", [
    (btyd.bgnbd_log_likelihood, (0.5, 3.0, 0.7, 2.2), 6),
    (btyd.paretonbd_log_likelihood, (0.6, 4.0, 0.8, 9.0), 6),
    (btyd.paretonbd_log_likelihood, (0.6, 9.0, 0.8, 4.0), 6),
    (btyd.nbd_log_likelihood, (0.5, 3.0), 5),  # t_x plays no part
])
def test_rows_sharing_x_and_a_time_get_their_own_likelihood(loglik, params, distinct):
    """Terms are computed once per distinct (x, t_x) and (x, T): rows that share one but not
    the other must still match the likelihood of each row on its own."""
    x = np.array([1.0, 1, 1, 4, 0, 4, 1])
    t_x = np.array([5.0, 5, 10, 20, 0, 5, 5])
    T = np.array([30.0, 25, 30, 25, 30, 30, 30])
    together = loglik(params, x, t_x, T)
    alone = [loglik(params, x[i:i + 1], t_x[i:i + 1], T[i:i + 1])[0] for i in range(len(x))]
    assert together == pytest.approx(alone, rel=1e-12)
    assert together[0] == together[6]
    assert len(set(together.round(12))) == distinct


def test_gammagamma_likelihood_equals_integral_over_nu():
    p, q, v = 3.0, 4.0, 20.0
    for x, m in [(1, 12.0), (5, 30.0)]:
        def individual(nu, x=x, m=m):
            return stats.gamma(a=p * x, scale=1.0 / (nu * x)).pdf(m) * _Gamma(q, v).pdf(nu)

        want, _ = integrate.quad(individual, 0, np.inf)
        got = np.exp(btyd.gammagamma_log_likelihood((p, q, v), np.array([x]), np.array([m])))[0]
        assert got == pytest.approx(want, rel=1e-7)


def test_bgnbd_expectation_equals_integral_over_the_dropout_posterior():
    """P(alive) times E over p ~ Beta(a, b + x) of (1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p."""
    r, alpha, a, b = 0.24, 4.4, 0.79, 2.43
    t = 39.0
    for x, t_x, T in [(0, 0.0, 38.86), (2, 30.43, 38.86), (7, 35.0, 38.86)]:
        post = stats.beta(a, b + x)

        def g(p, T=T, x=x, post=post):
            return (1 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p * post.pdf(p)

        alive = 1.0 if x == 0 else 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
        want = alive * integrate.quad(g, 0, 1, limit=200)[0]
        got = btyd.bgnbd_expected((r, alpha, a, b), t, np.array([x]), np.array([t_x]),
                                  np.array([T]))[0]
        assert got == pytest.approx(want, rel=1e-6)


def test_paretonbd_expectation_equals_posterior_integral():
    r, alpha, s, beta = 0.55, 10.6, 0.61, 11.7
    glam, gmu = _Gamma(r, alpha), _Gamma(s, beta)
    t = 39.0
    for x, t_x, T in [(0, 0.0, 38.86), (2, 30.43, 38.86)]:
        def alive_part(mu, lam, x=x, T=T):
            return lam**x * np.exp(-(lam + mu) * T) * glam.pdf(lam) * gmu.pdf(mu)

        def like(mu, lam, x=x, t_x=t_x, T=T):
            return (lam**x * mu / (lam + mu) * np.exp(-(lam + mu) * t_x)
                    + lam ** (x + 1) / (lam + mu) * np.exp(-(lam + mu) * T)) * glam.pdf(lam) * gmu.pdf(mu)

        def future(mu, lam):
            return alive_part(mu, lam) * lam / mu * -np.expm1(-mu * t)

        evidence = integrate.dblquad(like, 0, np.inf, 0, np.inf, epsabs=1e-14)[0]
        want = integrate.dblquad(future, 0, np.inf, 0, np.inf, epsabs=1e-14)[0] / evidence
        alive = integrate.dblquad(alive_part, 0, np.inf, 0, np.inf, epsabs=1e-14)[0] / evidence
        args = np.array([x]), np.array([t_x]), np.array([T])
        assert btyd.paretonbd_expected((r, alpha, s, beta), t, *args)[0] == pytest.approx(want, rel=1e-5)
        assert btyd.paretonbd_p_alive((r, alpha, s, beta), *args)[0] == pytest.approx(alive, rel=1e-6)


def test_published_cdnow_figures():
    """Fader, Hardie and Lee (2005) and Fader and Hardie's Pareto/NBD note, CDNOW in weeks."""
    d = _cdnow("cdnow_customers_summary.csv")
    assert len(d) == 2357
    bg = btyd.fit_purchases("bgnbd", d["frequency"], d["recency"], d["T"])
    for k, want in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert bg.params[k] == pytest.approx(want, abs=0.0015), k
    assert bg.log_likelihood * 2357 == pytest.approx(-9582.4, abs=0.1)
    # the paper's worked example: customer 1, E[Y(39) | 2, 30.43, 38.86] = 1.226
    one = np.array([2.0]), np.array([30.43]), np.array([38.86])
    assert btyd.bgnbd_expected(bg.values(), 39, *one)[0] == pytest.approx(1.226, abs=0.001)
    pn = btyd.fit_purchases("paretonbd", d["frequency"], d["recency"], d["T"])
    for k, want in {"r": 0.5534, "alpha": 10.5776, "s": 0.6061, "beta": 11.6650}.items():
        assert pn.params[k] == pytest.approx(want, rel=0.002), k
    assert pn.log_likelihood * 2357 == pytest.approx(-9595.0, abs=0.1)
    e = _cdnow("cdnow_customers_summary_with_transactions.csv")
    gg = btyd.fit_gammagamma(e["x"], e["zbar"])
    assert gg.customers == 946
    for k, want in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert gg.params[k] == pytest.approx(want, abs=0.01), k


def test_collapsed_rows_with_counts_fit_like_the_customers():
    d = _cdnow("cdnow_customers_summary.csv")
    agg = d.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    assert len(agg) < len(d)
    full = btyd.fit_purchases("bgnbd", d["frequency"], d["recency"], d["T"])
    grouped = btyd.fit_purchases("bgnbd", agg["frequency"], agg["recency"], agg["T"], agg["n"])
    assert grouped.customers == len(d)
    for k in full.params:
        assert grouped.params[k] == pytest.approx(full.params[k], rel=1e-4)


def _simulate_bgnbd(n, r, alpha, a, b, T_obs, horizon, rng):
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n) if a > 0 else np.zeros(n)
    T = rng.uniform(0.3, 1.0, n) * T_obs
    x = np.zeros(n)
    t_x = np.zeros(n)
    future = np.zeros(n)
    for i in range(n):
        t, alive = 0.0, True
        while alive:
            t += rng.exponential(1 / lam[i])
            if t > T[i] + horizon:
                break
            if t <= T[i]:
                x[i] += 1
                t_x[i] = t
            else:
                future[i] += 1
            alive = rng.uniform() >= p[i]
    return x, t_x, T, future


def test_bgnbd_recovers_simulated_parameters_and_future_purchases():
    rng = np.random.default_rng(7)
    x, t_x, T, future = _simulate_bgnbd(20000, 0.8, 6.0, 1.5, 4.0, 52.0, 26.0, rng)
    fit = btyd.fit_purchases("bgnbd", x, t_x, T)
    assert fit.params["r"] == pytest.approx(0.8, rel=0.1)
    assert fit.params["alpha"] == pytest.approx(6.0, rel=0.15)
    assert fit.params["a"] / (fit.params["a"] + fit.params["b"]) == pytest.approx(1.5 / 5.5, rel=0.15)
    expected = btyd.bgnbd_expected(fit.values(), 26.0, x, t_x, T)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.05)
    assert fit.dropout_identified


def test_paretonbd_recovers_simulated_parameters_and_future_purchases():
    rng = np.random.default_rng(3)
    n, r, alpha, s, beta, horizon = 20000, 0.6, 8.0, 0.9, 12.0, 26.0
    lam, mu = rng.gamma(r, 1 / alpha, n), rng.gamma(s, 1 / beta, n)
    life = rng.exponential(1 / mu)
    T = rng.uniform(0.3, 1.0, n) * 52.0
    seen = np.minimum(life, T)
    x = rng.poisson(lam * seen).astype(float)
    t_x = np.where(x > 0, seen * rng.beta(np.maximum(x, 1), 1), 0.0)
    future = rng.poisson(lam * np.clip(np.minimum(life, T + horizon) - T, 0, None))
    fit = btyd.fit_purchases("paretonbd", x, t_x, T)
    assert fit.params["r"] / fit.params["alpha"] == pytest.approx(r / alpha, rel=0.1)
    assert fit.params["s"] / fit.params["beta"] == pytest.approx(s / beta, rel=0.25)
    assert fit.dropout_identified
    expected = btyd.paretonbd_expected(fit.values(), horizon, x, t_x, T)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.05)


def test_no_dropout_gives_a_boundary_fit_and_finite_nbd_like_predictions():
    """Every customer keeps buying: the dropout process is not identifiable."""
    rng = np.random.default_rng(11)
    n = 5000
    lam = rng.gamma(2.0, 1 / 10.0, n)
    T = rng.uniform(20, 52, n)
    x = rng.poisson(lam * T).astype(float)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), 1), 0.0)  # max of x uniforms on (0, T)
    for model in btyd.PURCHASE_MODELS:
        fit = btyd.fit_purchases(model, x, t_x, T)
        assert not fit.dropout_identified, (model, fit)
        expected = (btyd.bgnbd_expected if model == "bgnbd" else btyd.paretonbd_expected)(
            fit.values(), 26.0, x, t_x, T)
        assert np.isfinite(expected).all()
        nbd = (fit.params["r"] + x) * 26.0 / (fit.params["alpha"] + T)
        assert expected.sum() == pytest.approx(nbd.sum(), rel=0.02)
        assert expected.sum() == pytest.approx((lam * 26.0).sum(), rel=0.05)


def test_gammagamma_expectation_shrinks_towards_the_population_mean():
    p, q, v = 6.25, 3.74, 15.44
    pop = p * v / (q - 1)
    got = btyd.gammagamma_expected((p, q, v), np.array([0.0, 1, 50]), np.array([0.0, 100, 100]))
    assert got[0] == pytest.approx(pop)
    weight = p * 1 / (p * 1 + q - 1)
    assert got[1] == pytest.approx((1 - weight) * pop + weight * 100)
    assert abs(got[2] - 100) < abs(got[1] - 100)
