"""Confidence intervals of an evaluation's figures, against values computed by hand or published."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tails.intervals import binomial_interval, bootstrap_rmse_interval, poisson_interval, verdict


def test_clopper_pearson_matches_its_closed_forms_at_the_ends():
    # k = 0: the upper bound solves (1 - p)^n = alpha / 2; k = n: the lower bound solves p^n = alpha / 2
    assert binomial_interval(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert binomial_interval(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
    assert binomial_interval(0, 10)[1] == pytest.approx(0.3085, abs=1e-4)  # the textbook value


def test_clopper_pearson_of_a_model_cards_recall():
    # 345 of 466 comets of r < 19: 74.0 %, within about 4 points
    low, high = binomial_interval(345, 466)
    assert low == pytest.approx(0.6981, abs=5e-4) and high == pytest.approx(0.7797, abs=5e-4)
    assert low < 345 / 466 < high
    # a wider interval at a higher level, and none without trials
    low99, high99 = binomial_interval(345, 466, level=0.99)
    assert low99 < low and high99 > high
    assert binomial_interval(0, 0) is None


def test_garwood_matches_the_published_table():
    # Garwood's 95 % limits for a Poisson mean: 0 -> (0, 3.689), 3 -> (0.619, 8.767), 10 -> (4.795, 18.39)
    assert poisson_interval(0, 1.0) == (0.0, pytest.approx(3.689, abs=1e-3))
    assert poisson_interval(3, 1.0) == (pytest.approx(0.619, abs=1e-3), pytest.approx(8.767, abs=1e-3))
    assert poisson_interval(10, 1.0) == (pytest.approx(4.795, abs=1e-3), pytest.approx(18.39, abs=1e-2))
    # as a rate: per frame over 100 frames
    low, high = poisson_interval(3, 100)
    assert (low, high) == (pytest.approx(0.00619, abs=1e-5), pytest.approx(0.08767, abs=1e-5))
    # with no event, -ln(alpha / 2) / exposure
    assert poisson_interval(0, 200)[1] == pytest.approx(-math.log(0.025) / 200)
    assert poisson_interval(2, 0) is None


def test_bootstrap_interval_of_the_rmse_is_reproducible_and_covers_it():
    offsets = np.random.default_rng(1).rayleigh(0.6, 300)
    rmse = float(np.sqrt(np.mean(offsets**2)))
    low, high = bootstrap_rmse_interval(offsets)
    assert low < rmse < high and high - low < 0.2 * rmse
    assert bootstrap_rmse_interval(offsets) == (low, high)  # the same seed, the same interval
    assert bootstrap_rmse_interval([1.5, np.nan]) == (1.5, 1.5)
    assert bootstrap_rmse_interval([np.nan]) is None


def test_a_target_is_met_or_missed_only_when_the_whole_interval_says_so():
    assert verdict((0.992, 1.0), 0.99, at_least=True) == "met"
    assert verdict((0.99, 1.0), 0.99, at_least=True) == "met"  # the bound itself meets it
    assert verdict((0.70, 0.78), 0.99, at_least=True) == "missed"
    assert verdict((0.97, 0.995), 0.99, at_least=True) == "undecided"
    assert verdict((0.0, 0.018), 0.02, at_least=False) == "met"
    assert verdict((0.006, 0.088), 0.02, at_least=False) == "undecided"
    assert verdict((0.021, 0.29), 0.02, at_least=False) == "missed"
    assert verdict(None, 0.02, at_least=False) == "unmeasured"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: binomial_interval(5, 3), "0 <= k <= n"),
        (lambda: binomial_interval(-1, 3), "0 <= k <= n"),
        (lambda: poisson_interval(-1, 10), "cannot be negative"),
        (lambda: binomial_interval(1, 2, level=1.5), "between 0 and 1"),
        (lambda: poisson_interval(1, 2, level=0), "between 0 and 1"),
    ],
)
def test_impossible_counts_and_levels_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
