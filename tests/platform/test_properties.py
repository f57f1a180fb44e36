"""Property-based checks of the probability machinery (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from causalrec.platform import plackett_luce
from causalrec.platform.alias import AliasTable
from tests.platform.test_alias import implied_probabilities

logits = arrays(np.float64, st.integers(2, 9), elements=st.floats(-30, 30))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@settings(max_examples=60, deadline=None)
@given(logits)
def test_alias_tables_are_exact_for_any_distribution(values):
    p = softmax(values)
    table = AliasTable.build(p[None, :])
    np.testing.assert_allclose(implied_probabilities(table)[0], p, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(logits, st.integers(1, 3))
def test_plackett_luce_marginals_are_doubly_substochastic(values, K):
    p = softmax(values)
    K = min(K, len(p))
    result = plackett_luce.marginals(p, K)
    marginal = result.marginal
    assert result.exact.all()
    np.testing.assert_allclose(marginal.sum(axis=0), 1.0, atol=1e-9)  # each position sums to 1
    assert (marginal.sum(axis=1) <= 1 + 1e-9).all()  # an item fills at most one position
    np.testing.assert_allclose(marginal[:, 0], p, rtol=1e-12)
