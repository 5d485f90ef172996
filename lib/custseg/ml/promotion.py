"""Which model serves: the champion rule, as a pure function of backtest results.

A model's standing is its metric averaged over the evaluation origins (normalised Gini for
spend, macro-F1 for tiers), with a bootstrap interval from the same draws at every origin.
The rule a served model must meet against the best baseline (the baseline with the best mean):

- its mean is not below the lower end of the best baseline's interval;
- for spend, its total predicted spend is no further from the actual total than the best
  baseline's (the differences summed over the origins): a model that ranks well but predicts
  twice the money does not serve.

Among the new candidates, those that meet the rule come first, then the best mean. The current
champion is judged only on the origins after the last label it was trained on; the best
candidate replaces it when it stands higher on those origins (a win on the mean; the difference
and its interval are reported). A model that breaks the rule serves only when no contender
meets it, and the decision says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Result:
    """One model at one origin: the metric, its bootstrap draws and, for spend, the absolute
    difference between predicted and actual total spend."""

    value: float | None
    draws: np.ndarray = field(default_factory=lambda: np.zeros(0))
    total_error: float | None = None


Results = dict[dt.date, Result]


@dataclass(frozen=True)
class Standing:
    """A model's mean over a set of origins, its interval and the rule it breaks."""

    name: str
    value: float | None
    low: float | None
    high: float | None
    total_error: float | None
    breaches: tuple[str, ...] = ()

    def key(self) -> tuple[bool, float]:
        """Ordering: meets the rule first, then the higher mean."""
        return (not self.breaches, -np.inf if self.value is None else self.value)


@dataclass(frozen=True)
class Decision:
    """The model that serves, why, and the standings it was chosen from."""

    winner: str
    notes: tuple[str, ...]
    standings: dict[str, Standing]


def mean_draws(results: Results, origins: list[dt.date]) -> tuple[float | None, np.ndarray]:
    """The metric's mean over ``origins`` and the per-draw means (draw b is the same resample
    at every origin)."""
    values = [results[o].value for o in origins]
    if not origins or any(v is None for v in values):
        return None, np.zeros(0)
    sizes = {results[o].draws.size for o in origins}
    draws = (np.mean([results[o].draws for o in origins], axis=0) if len(sizes) == 1
             else np.zeros(0))
    return float(np.mean(values)), draws


def _interval(draws: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    ok = draws[np.isfinite(draws)] if draws.size else draws
    if ok.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ok, [tail, 1.0 - tail])
    return float(lo), float(hi)


def standing(name: str, results: Results, origins: list[dt.date], confidence: float
             ) -> Standing:
    """Mean, interval and summed total error over ``origins`` (no rule checked yet)."""
    value, draws = mean_draws(results, origins)
    low, high = _interval(draws, confidence)
    errors = [results[o].total_error for o in origins]
    total = None if any(e is None for e in errors) or not errors else float(sum(errors))
    return Standing(name, value, low, high, total)


def breaches(s: Standing, best: Standing, best_total: float | None, metric: str
             ) -> tuple[str, ...]:
    """How ``s`` breaks the rule against the best baseline ``best``, whose total spend is
    ``best_total`` from the actual (empty when the rule holds)."""
    out = []
    if s.value is None:
        out.append(f"no {metric}")
    elif best.low is not None and s.value < best.low:
        out.append(f"{metric} {s.value:.3f} is below the interval of {best.name} "
                   f"({best.value:.3f}, {best.low:.3f} to {best.high:.3f})")
    if best_total is not None and s.total_error is not None and \
            s.total_error > best_total + 1e-9:
        out.append(f"its total spend is {s.total_error:,.0f} from the actual, {best.name}'s "
                   f"{best_total:,.0f}")
    return tuple(out)


def _judge(models: dict[str, Results], baselines: dict[str, Results], origins: list[dt.date],
           metric: str, confidence: float, check_total: bool) -> dict[str, Standing]:
    """Standings of ``models`` on ``origins`` with the rule checked against the baselines."""
    base = {n: standing(n, r, origins, confidence) for n, r in baselines.items()}
    ranked = [b for b in base.values() if b.value is not None]
    best = max(ranked, key=lambda b: b.value) if ranked else None
    total = best.total_error if check_total and best is not None else None
    out = {}
    for name, results in models.items():
        s = standing(name, results, origins, confidence)
        rule = breaches(s, best, total, metric) if best is not None else ()
        out[name] = Standing(s.name, s.value, s.low, s.high, s.total_error, rule)
    return out


def _difference(a: Results, b: Results, origins: list[dt.date], confidence: float
                ) -> tuple[float | None, float | None, float | None]:
    va, da = mean_draws(a, origins)
    vb, db = mean_draws(b, origins)
    if va is None or vb is None:
        return None, None, None
    low, high = _interval(da - db, confidence) if da.size == db.size else (None, None)
    return va - vb, low, high


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def choose(candidates: dict[str, Results], baselines: dict[str, Results],
           incumbent: tuple[str, Results] | None, metric: str, confidence: float = 0.9,
           check_total: bool = False) -> Decision:
    """The model that serves among new ``candidates`` and the ``incumbent`` champion (its
    results only at the origins it may be judged on), by the rule above."""
    origins = sorted({o for r in candidates.values() for o in r})
    standings = _judge(candidates, baselines, origins, metric, confidence, check_total)
    best = max(standings.values(), key=Standing.key)
    notes = [f"best candidate {best.name}: mean {metric} {best.value:.3f} over "
             f"{len(origins)} origin(s)" if best.value is not None
             else f"best candidate {best.name}: no {metric}"]
    winner = best.name
    if incumbent is not None:
        label, results = incumbent
        common = sorted(o for o in results if o in origins)
        if not common:
            notes.append(f"{label} was trained on labels overlapping every origin: not judged")
        else:
            pair = _judge({best.name: candidates[best.name], label: results}, baselines, common,
                          metric, confidence, check_total)
            diff, low, high = _difference(candidates[best.name], results, common, confidence)
            standings[label] = pair[label]
            won = pair[best.name].key() > pair[label].key()
            winner = best.name if won else label
            notes.append(f"{best.name} against {label} on {len(common)} origin(s): {metric} "
                         f"{_fmt(diff)} (interval {_fmt(low)} to {_fmt(high)}); "
                         + (f"{best.name} serves" if won else f"{label} stays"))
    chosen = standings[winner]
    if chosen.breaches:
        notes.append(f"no contender meets the rule; {winner} serves, but "
                     + "; ".join(chosen.breaches))
    return Decision(winner, tuple(notes), standings)
