"""The champion rule as a pure function: every branch forced with hand-made results."""

import datetime as dt

import numpy as np
import pytest

from custseg.ml.promotion import Result, choose, mean_draws, standing

O1, O2, O3 = dt.date(2011, 9, 1), dt.date(2011, 8, 2), dt.date(2011, 7, 3)


def results(values, spread=0.01, error=None, origins=(O1, O2, O3)):
    """One model's results: each origin's value with 101 draws evenly spread around it."""
    offsets = np.linspace(-spread, spread, 101)
    return {o: Result(v, v + offsets, error) for o, v in zip(origins, values, strict=True)}


def test_mean_over_origins_and_its_draws():
    r = results([0.6, 0.7, 0.8])
    value, draws = mean_draws(r, [O1, O2, O3])
    assert value == pytest.approx(0.7)
    assert np.allclose(draws, 0.7 + np.linspace(-0.01, 0.01, 101))
    s = standing("m", r, [O1, O2, O3], confidence=0.9)
    assert (s.low, s.high) == pytest.approx((0.7 - 0.009, 0.7 + 0.009))
    assert mean_draws(r, [O1, O2])[0] == pytest.approx(0.65)


def test_the_best_candidate_that_meets_the_rule_serves():
    baselines = {"past_spend_rate": results([0.70, 0.70, 0.70], error=100.0)}
    candidates = {"gbt": results([0.80, 0.80, 0.80], error=50.0),
                  "blend": results([0.75, 0.75, 0.75], error=10.0)}
    d = choose(candidates, baselines, None, "Gini", check_total=True)
    assert d.winner == "gbt"
    assert not d.standings["gbt"].breaches
    assert not any("rule" in n for n in d.notes)


def test_a_candidate_behind_the_best_baseline_beyond_its_interval_does_not_serve():
    # baseline mean 0.70, interval 0.69..0.71: 0.685 is behind it beyond the interval
    baselines = {"bgnbd_gg": results([0.70, 0.70, 0.70], spread=0.0101)}
    candidates = {"gbt": results([0.685, 0.685, 0.685]),
                  "bgnbd_gg": results([0.70, 0.70, 0.70], spread=0.0101)}
    d = choose(candidates, baselines, None, "Gini")
    assert d.standings["gbt"].breaches
    assert "below the interval of bgnbd_gg" in d.standings["gbt"].breaches[0]
    assert d.winner == "bgnbd_gg"
    # inside the interval is no breach: 0.695 is behind, but not beyond
    candidates["gbt"] = results([0.695, 0.695, 0.695])
    d = choose(candidates, baselines, None, "Gini")
    assert not d.standings["gbt"].breaches


def test_a_model_further_from_the_actual_total_than_the_best_baseline_does_not_serve():
    baselines = {"past_spend_rate": results([0.60, 0.60, 0.60], error=300.0),
                 "paretonbd_gg": results([0.70, 0.70, 0.70], error=1000.0)}
    candidates = {"gbt": results([0.90, 0.90, 0.90], error=400.0),   # 1,200 over 3 origins
                  "blend": results([0.80, 0.80, 0.80], error=200.0)}
    d = choose(candidates, baselines, None, "Gini", check_total=True)
    # the best baseline by Gini is paretonbd_gg, 3,000 from the actual over the origins
    assert not d.standings["gbt"].breaches
    assert d.winner == "gbt"
    candidates["gbt"] = results([0.90, 0.90, 0.90], error=1100.0)
    d = choose(candidates, baselines, None, "Gini", check_total=True)
    assert "from the actual, paretonbd_gg's 3,000" in d.standings["gbt"].breaches[0]
    assert d.winner == "blend"
    # without the total check (tiers) the first one serves
    assert choose(candidates, baselines, None, "F1").winner == "gbt"


def test_when_nothing_meets_the_rule_the_best_serves_and_the_run_says_so():
    baselines = {"past_spend_rate": results([0.90, 0.90, 0.90])}
    candidates = {"gbt": results([0.70, 0.70, 0.70]), "blend": results([0.75, 0.75, 0.75])}
    d = choose(candidates, baselines, None, "Gini")
    assert d.winner == "blend"
    assert any(n.startswith("no contender meets the rule; blend serves") for n in d.notes)


def test_the_champion_is_judged_only_on_its_origins_and_kept_unless_beaten():
    baselines = {"past_spend_rate": results([0.5, 0.5, 0.5])}
    candidates = {"blend": results([0.70, 0.80, 0.90])}
    # judged on O1 only (its labels end after O2): 0.72 there beats the candidate's 0.70,
    # although the candidate's mean over all three origins (0.80) is higher
    held = {O1: Result(0.72, 0.72 + np.linspace(-0.01, 0.01, 101))}
    d = choose(candidates, baselines, ("version 3", held), "Gini")
    assert d.winner == "version 3"
    assert any("blend against version 3 on 1 origin(s): Gini -0.020" in n for n in d.notes)
    held = {O1: Result(0.65, 0.65 + np.linspace(-0.01, 0.01, 101)),
            O2: Result(0.75, 0.75 + np.linspace(-0.01, 0.01, 101))}
    d = choose(candidates, baselines, ("version 3", held), "Gini")
    assert d.winner == "blend"
    note = next(n for n in d.notes if n.startswith("blend against version 3"))
    assert "Gini +0.050 (interval +0.050 to +0.050); blend serves" in note


def test_a_champion_whose_labels_overlap_every_origin_is_not_judged():
    d = choose({"gbt": results([0.7, 0.7, 0.7])}, {"past_spend_rate": results([0.6] * 3)},
               ("version 2", {}), "Gini")
    assert d.winner == "gbt"
    assert any("overlapping every origin: not judged" in n for n in d.notes)


def test_a_champion_that_breaks_the_rule_loses_to_one_that_meets_it():
    baselines = {"paretonbd_gg": results([0.70, 0.70, 0.70])}
    candidates = {"paretonbd_gg": results([0.70, 0.70, 0.70])}
    held = {o: Result(0.60, 0.60 + np.linspace(-0.01, 0.01, 101)) for o in (O1, O2, O3)}
    d = choose(candidates, baselines, ("version 1", held), "Gini")
    assert d.standings["version 1"].breaches
    assert d.winner == "paretonbd_gg"
