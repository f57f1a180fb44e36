"""The closed loop's world measures, against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.loop.metrics import (
    catalogue_coverage,
    exposure_gini,
    interest_homogenisation,
    long_tail_items,
    long_tail_share,
)
from causalrec.platform.errors import DataError


def test_long_tail_is_everything_outside_the_top_fifth():
    popularity = np.array([0.05, 0.4, 0.1, 0.3, 0.02, 0.03, 0.04, 0.01, 0.03, 0.02])
    tail = long_tail_items(popularity)
    np.testing.assert_array_equal(np.flatnonzero(~tail), [1, 3])
    items = np.array([1, 1, 3, 0, 7, 7])
    clicks = np.array([1, 0, 0, 1, 1, 1])
    assert long_tail_share(items, tail) == pytest.approx(3 / 6)
    assert long_tail_share(items, tail, clicks) == pytest.approx(3 / 4)
    assert np.isnan(long_tail_share(items, tail, np.zeros(6)))


def test_coverage_and_gini_against_their_definitions():
    rng = np.random.default_rng(0)
    items = rng.zipf(1.5, size=2_000) % 50
    counts = np.bincount(items, minlength=50)
    brute = np.abs(counts[:, None] - counts[None, :]).sum() / (2 * 50 * counts.sum())
    assert exposure_gini(items, 50) == pytest.approx(brute, rel=1e-12)
    assert catalogue_coverage(items, 50) == pytest.approx((counts > 0).mean())
    assert exposure_gini(np.arange(50), 50) == pytest.approx(0.0, abs=1e-12)
    assert exposure_gini(np.zeros(10, dtype=int), 50) == pytest.approx(49 / 50)


def test_homogenisation_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(40, 6)) + np.array([2.0, 0, 0, 0, 0, 0])
    unit = theta / np.linalg.norm(theta, axis=1, keepdims=True)
    cosine = unit @ unit.T
    brute = (cosine.sum() - np.trace(cosine)) / (40 * 39)
    assert interest_homogenisation(theta) == pytest.approx(brute, rel=1e-12)
    assert interest_homogenisation(np.tile([1.0, 2.0], (5, 1))) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: long_tail_items(np.array([0.5, 0.5]), head_share=1.0), "head_share"),
        (lambda: catalogue_coverage(np.array([0, 9]), 5), r"n_items=5"),
        (lambda: exposure_gini(np.array([0.5]), 5), "integer"),
        (lambda: interest_homogenisation(np.zeros((3, 2))), "zero row"),
        (lambda: interest_homogenisation(np.ones((1, 2))), "n_users >= 2"),
        (lambda: long_tail_share(np.array([0, 1]), np.ones(3, bool), np.ones(3)), "weights"),
    ],
)
def test_bad_input_names_the_field(call, message):
    with pytest.raises(DataError, match=message):
        call()
