"""Probabilistic "buy till you die" models fitted by maximum likelihood on aggregates.

BG/NBD (Fader, Hardie and Lee 2005) and Pareto/NBD (Schmittlein, Morrison and Colombo 1987)
model the number of repeat purchases; Gamma-Gamma (Fader, Hardie and Lee 2005) models the
spend per purchase. Inputs are NumPy arrays with one row per distinct (x, t_x, T) (or
(x, m)) and a ``weight`` that counts the customers sharing it, so millions of customers fit
in seconds on the driver.

Parameters are fitted on the log scale inside bounds. Where the data cannot identify the
dropout process (every customer still buying), a parameter runs to its bound: the fit is
flagged with ``at_boundary`` and still gives finite predictions, which then approach the
no-dropout (NBD) limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize, special

LOG_BOUNDS = (np.log(1e-5), np.log(1e5))
PURCHASE_MODELS = ("bgnbd", "paretonbd")
_PARAMS = {"bgnbd": ("r", "alpha", "a", "b"), "paretonbd": ("r", "alpha", "s", "beta"),
           "gammagamma": ("p", "q", "v"), "nbd": ("r", "alpha")}
# Half the 95% point of chi-square with one degree of freedom: the likelihood-ratio test of
# the purchase model against its no-dropout (NBD) limit.
_LR_CRITICAL = 1.92


@dataclass(frozen=True)
class Fit:
    """A fitted model: parameters, mean log-likelihood per customer and boundary flags.

    ``dropout_identified`` is False when the purchase model fits no better than its
    no-dropout limit (likelihood-ratio test at 5%): the data cannot tell when customers leave.
    """

    model: str
    params: dict[str, float]
    log_likelihood: float
    customers: float
    rows: int
    converged: bool
    at_boundary: list[str] = field(default_factory=list)
    dropout_identified: bool = True

    def values(self) -> tuple[float, ...]:
        return tuple(self.params[k] for k in _PARAMS[self.model])


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(256)
_U, _W = (_NODES + 1.0) / 2.0, _WEIGHTS / 2.0


def log_hyp2f1(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1(a, b; c; z) for 0 <= z < 1 (SciPy's series; NaN where it fails)."""
    with np.errstate(all="ignore"):
        out = np.log(special.hyp2f1(a, b, c, np.asarray(z, dtype=float)))
    return np.where(np.isfinite(out), out, np.nan)


def log_hyp2f1_next(a: np.ndarray, b: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1(a, b; a + 1; z) for 0 <= z < 1, also where the value overflows a double.

    Euler's integral with u = t^a gives 2F1(a, b; a + 1; z) = integral over u in (0, 1) of
    (1 - z u^(1/a))^-b, summed on the log scale with Gauss-Legendre nodes where SciPy fails.
    """
    a, b, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, z)))
    out = log_hyp2f1(a, b, a + 1.0, z)
    bad = ~np.isfinite(out)
    if bad.any():
        ab, bb, zb = a[bad][:, None], b[bad][:, None], z[bad][:, None]
        terms = -bb * np.log1p(-zb * _U[None, :] ** (1.0 / ab)) + np.log(_W)[None, :]
        out = out.copy()
        out[bad] = special.logsumexp(terms, axis=1)
    return out


@dataclass(frozen=True)
class _Distinct:
    """The distinct rows of some columns, and for each input row the position of its own."""

    values: tuple[np.ndarray, ...]
    index: np.ndarray

    @classmethod
    def of(cls, *cols: np.ndarray) -> _Distinct:
        rows, index = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        return cls(tuple(rows.T), index.ravel())

    def map(self, f: Callable[..., np.ndarray]) -> np.ndarray:
        """``f`` of the columns, evaluated once per distinct row and given back per input row."""
        return f(*self.values)[self.index]


@dataclass(frozen=True)
class Histories:
    """Purchase histories (x, t_x, T), one per row, with their distinct x, (x, t_x) and (x, T).

    The likelihoods' costly terms (log-gamma, the hypergeometric function) depend on x and one
    of the two times only: evaluated on the distinct pairs, about a tenth of the rows, and
    gathered back, they give the same values for a fraction of the work.
    """

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    by_x: _Distinct
    by_x_t_x: _Distinct
    by_x_T: _Distinct

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Histories:
        x, t_x, T = (np.asarray(a, dtype=float) for a in (x, t_x, T))
        return cls(x, t_x, T, _Distinct.of(x), _Distinct.of(x, t_x), _Distinct.of(x, T))


def _bgnbd(params: tuple[float, ...], h: Histories) -> np.ndarray:
    r, alpha, a, b = params

    def head(x: np.ndarray) -> np.ndarray:
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = (special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b)
              - special.gammaln(a + b + x))
        return a1 + a2

    def a4(x: np.ndarray, t_x: np.ndarray) -> np.ndarray:
        xs = np.maximum(x, 1)
        return np.where(x > 0, np.log(a) - np.log(b + xs - 1) - (r + x) * np.log(alpha + t_x),
                        -np.inf)

    a3 = h.by_x_T.map(lambda x, T: -(r + x) * np.log(alpha + T))
    return h.by_x.map(head) + np.logaddexp(a3, h.by_x_t_x.map(a4))


def bgnbd_log_likelihood(params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray,
                         T: np.ndarray) -> np.ndarray:
    """Log-likelihood of each (x, t_x, T) under BG/NBD (r, alpha, a, b)."""
    return _bgnbd(params, Histories.of(x, t_x, T))


def _nbd(params: tuple[float, ...], h: Histories) -> np.ndarray:
    r, alpha = params
    return h.by_x_T.map(lambda x, T: special.gammaln(r + x) - special.gammaln(r)
                        + r * np.log(alpha) - (r + x) * np.log(alpha + T))


def nbd_log_likelihood(params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray,
                       T: np.ndarray) -> np.ndarray:
    """The no-dropout limit of both purchase models: Poisson purchases, gamma rates."""
    return _nbd(params, Histories.of(x, t_x, T))


def _pareto_terms(params: tuple[float, ...], h: Histories) -> tuple[np.ndarray, np.ndarray]:
    """(log of 1/((alpha+T)^(r+x) (beta+T)^s), log of A0) from Fader and Hardie's note."""
    r, alpha, s, beta = params
    big, diff = max(alpha, beta), abs(alpha - beta)

    def log_f(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        rsx = r + s + x
        b_arg = s + 1.0 if alpha >= beta else r + x
        return log_hyp2f1_next(rsx, b_arg, diff / (big + t)) - rsx * np.log(big + t)

    l2, l3 = h.by_x_t_x.map(log_f), h.by_x_T.map(log_f)
    with np.errstate(divide="ignore"):
        log_a0 = l2 + np.log(-np.expm1(np.minimum(l3 - l2, 0.0)))
    l1 = h.by_x_T.map(lambda x, T: -(r + x) * np.log(alpha + T) - s * np.log(beta + T))
    return l1, log_a0


def _paretonbd(params: tuple[float, ...], h: Histories) -> np.ndarray:
    r, alpha, s, beta = params
    l1, log_a0 = _pareto_terms(params, h)
    head = h.by_x.map(lambda x: special.gammaln(r + x) - special.gammaln(r)
                      + r * np.log(alpha) + s * np.log(beta))
    log_s = h.by_x.map(lambda x: np.log(s / (r + s + x)))
    return head + np.logaddexp(l1, log_s + log_a0)


def paretonbd_log_likelihood(params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray,
                             T: np.ndarray) -> np.ndarray:
    """Log-likelihood of each (x, t_x, T) under Pareto/NBD (r, alpha, s, beta)."""
    return _paretonbd(params, Histories.of(x, t_x, T))


def gammagamma_log_likelihood(params: tuple[float, ...], x: np.ndarray,
                              m: np.ndarray) -> np.ndarray:
    """Log-likelihood of each mean spend ``m`` over ``x`` repeat purchases (x > 0)."""
    p, q, v = params
    px = p * x
    return (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
            + q * np.log(v) + (px - 1) * np.log(m) + px * np.log(x)
            - (px + q) * np.log(v + m * x))


def _fit(model: str, loglik: Callable[..., np.ndarray], data: tuple, weight: np.ndarray
         ) -> Fit:
    total = float(weight.sum())
    if total <= 0:
        raise ValueError(f"{model}: no customers to fit")

    def objective(theta: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            ll = loglik(tuple(np.exp(theta)), *data)
        value = -float(np.dot(weight, ll)) / total
        return value if np.isfinite(value) else 1e12

    names = _PARAMS[model]
    bounds = [LOG_BOUNDS] * len(names)
    best = None
    for start in (np.zeros(len(names)), np.full(len(names), 1.0)):
        res = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    theta = best.x
    near = [n for n, t in zip(names, theta, strict=True)
            if min(t - LOG_BOUNDS[0], LOG_BOUNDS[1] - t) < 1e-3]
    return Fit(model=model, params=dict(zip(names, map(float, np.exp(theta)), strict=True)),
               log_likelihood=-float(best.fun), customers=total, rows=len(weight),
               converged=bool(best.success), at_boundary=near)


def fit_purchases(model: str, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
                  weight: np.ndarray | None = None) -> Fit:
    """Fit BG/NBD (``bgnbd``) or Pareto/NBD (``paretonbd``) to repeat-purchase aggregates."""
    h = Histories.of(x, t_x, T)
    weight = np.ones_like(h.x) if weight is None else np.asarray(weight, dtype=float)
    loglik = {"bgnbd": _bgnbd, "paretonbd": _paretonbd}[model]
    fit = _fit(model, loglik, (h,), weight)
    nbd = _fit("nbd", _nbd, (h,), weight)
    gain = (fit.log_likelihood - nbd.log_likelihood) * fit.customers
    return replace(fit, dropout_identified=bool(gain > _LR_CRITICAL))


def fit_gammagamma(x: np.ndarray, m: np.ndarray, weight: np.ndarray | None = None) -> Fit:
    """Fit Gamma-Gamma to customers with x > 0 repeat purchases of mean value m."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weight = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    keep = (x > 0) & (m > 0)
    return _fit("gammagamma", gammagamma_log_likelihood, (x[keep], m[keep]), weight[keep])


def bgnbd_p_alive(params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray,
                  T: np.ndarray) -> np.ndarray:
    """P(still active at T | x, t_x, T) under BG/NBD."""
    r, alpha, a, b = params
    xs = np.maximum(x, 1)
    log_odds = np.log(a) - np.log(b + xs - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, special.expit(-log_odds), 1.0)


def bgnbd_expected(params: tuple[float, ...], t: float, x: np.ndarray, t_x: np.ndarray,
                   T: np.ndarray) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] under BG/NBD (Fader, Hardie and Lee, eq. 10)."""
    r, alpha, a, b = params
    if abs(a - 1.0) < 1e-9:
        a = 1.0 + 1e-9
    c = a + b + x - 1.0
    z = t / (alpha + T + t)
    log_term = log_hyp2f1(r + x, b + x, c, z) + (r + x) * np.log1p(-z)
    unconditional = c / (a - 1.0) * -np.expm1(log_term)
    return unconditional * bgnbd_p_alive(params, x, t_x, T)


def paretonbd_p_alive(params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray,
                      T: np.ndarray) -> np.ndarray:
    """P(still active at T | x, t_x, T) under Pareto/NBD."""
    r, alpha, s, beta = params
    l1, log_a0 = _pareto_terms(params, Histories.of(x, t_x, T))
    return special.expit(-(np.log(s / (r + s + x)) - l1 + log_a0))


def paretonbd_expected(params: tuple[float, ...], t: float, x: np.ndarray, t_x: np.ndarray,
                       T: np.ndarray) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] under Pareto/NBD."""
    r, alpha, s, beta = params
    log_q = np.log(beta + T) - np.log(beta + T + t)
    # (1 - q^(s-1)) / (s - 1), with its limit -log q at s = 1
    growth = -np.expm1((s - 1.0) * log_q) / (s - 1.0) if abs(s - 1.0) > 1e-9 else -log_q
    rate = (r + x) * (beta + T) / (alpha + T)
    return rate * growth * paretonbd_p_alive(params, x, t_x, T)


def gammagamma_expected(params: tuple[float, ...], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[spend per purchase | x, m]; the population mean p v / (q - 1) where x = 0."""
    p, q, v = params
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    return p * (v + x * np.where(x > 0, m, 0.0)) / (p * x + q - 1.0)
