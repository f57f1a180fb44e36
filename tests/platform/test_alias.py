import numpy as np
from scipy import stats

from causalrec.platform.alias import AliasTable


def implied_probabilities(table: AliasTable) -> np.ndarray:
    n_rows, n = table.accept.shape
    implied = np.zeros((n_rows, n))
    rows = np.repeat(np.arange(n_rows), n)
    np.add.at(implied, (rows, np.tile(np.arange(n), n_rows)), table.accept.ravel() / n)
    np.add.at(implied, (rows, table.alias.ravel()), (1 - table.accept.ravel()) / n)
    return implied


def test_tables_encode_the_distributions_exactly():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(50, 0.2), size=30)
    probs[0] = np.eye(50)[3]  # a point mass
    probs[1] = 1 / 50  # uniform
    table = AliasTable.build(probs)
    np.testing.assert_allclose(implied_probabilities(table), probs, atol=1e-14)


def test_draws_follow_the_distribution():
    probs = np.array([[0.5, 0.25, 0.125, 0.0625, 0.0625], [0.05, 0.05, 0.1, 0.3, 0.5]])
    table = AliasTable.build(probs)
    rng = np.random.default_rng(1)
    for row in range(2):
        draws = table.sample(np.full(50_000, row), rng)
        observed = np.bincount(draws, minlength=5)
        assert stats.chisquare(observed, 50_000 * probs[row]).pvalue > 1e-3
