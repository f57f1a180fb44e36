import numpy as np
import pytest

from causalrec.platform.errors import ConfigError
from causalrec.simulators import generate_logs, iter_log_chunks, logs


def test_same_seed_same_log_different_seed_different(small_simulator):
    a = generate_logs(small_simulator, n_rounds=5_000, seed=9)
    b = generate_logs(small_simulator, n_rounds=5_000, seed=9)
    c = generate_logs(small_simulator, n_rounds=5_000, seed=10)
    for name in ("user_id", "item_id", "click", "pscore"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.item_id, c.item_id)


def test_chunked_generation_has_no_gaps(small_simulator, monkeypatch):
    monkeypatch.setattr(logs, "CHUNK_ROUNDS", 1_000)
    chunks = list(iter_log_chunks(small_simulator, small_simulator.logging_policy(), 3_500, seed=0))
    assert [c.n_rows for c in chunks] == [1_000, 1_000, 1_000, 500]
    round_ids = np.concatenate([c.round_id for c in chunks])
    np.testing.assert_array_equal(round_ids, np.arange(3_500))


def test_logged_pscore_equals_policy_probability(small_simulator):
    log = generate_logs(small_simulator, n_rounds=2_000, seed=1)
    dist = small_simulator.logging_policy().action_distribution(log.user_id)
    np.testing.assert_allclose(log.pscore, dist[np.arange(log.n_rows), log.item_id], rtol=1e-12)
    np.testing.assert_array_equal(log.pscore, log.pscore_prefix)
    np.testing.assert_array_equal(
        log.user_features, small_simulator.user_features[log.user_id].astype(np.float32)
    )


def test_slate_logs_have_exact_marginal_and_prefix_pscores(slate_simulator):
    log = generate_logs(slate_simulator, n_rounds=2_000, seed=3)
    assert log.n_rows == 6_000 and log.n_rounds == 2_000
    np.testing.assert_array_equal(log.position[:6], [0, 1, 2, 0, 1, 2])
    items = log.item_id.reshape(-1, 3)
    assert (np.sort(items, axis=1)[:, 1:] != np.sort(items, axis=1)[:, :-1]).all()
    policy = slate_simulator.logging_policy()
    dist = policy.action_distribution(log.user_id)
    np.testing.assert_allclose(
        log.pscore, dist[np.arange(log.n_rows), log.item_id, log.position], rtol=1e-10
    )
    prefix = log.pscore_prefix.reshape(-1, 3)
    assert (np.diff(prefix, axis=1) < 0).all()
    assert policy.exact_marginals
    assert log.metadata["marginal_mc_draws"] == policy.mc_draws


def test_empirical_frequencies_match_logging_policy(small_simulator):
    log = generate_logs(small_simulator, n_rounds=300_000, seed=5)
    from scipy import stats

    user = np.bincount(log.user_id).argmax()
    rows = log.user_id == user
    dist = small_simulator.logging_policy().action_distribution(np.array([user]))[0]
    observed = np.bincount(log.item_id[rows], minlength=small_simulator.n_items)
    assert stats.chisquare(observed, rows.sum() * dist).pvalue > 1e-3


def test_uniform_fraction_logs_a_uniform_slice(small_simulator):
    log = generate_logs(small_simulator, n_rounds=20_000, seed=2, uniform_fraction=0.25)
    uniform = log.policy == "uniform"
    share = uniform.mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20_000)
    np.testing.assert_allclose(log.pscore[uniform], 1 / small_simulator.n_items)
    assert set(np.unique(log.policy)) == {"uniform", "logging"}
    assert log.metadata["uniform_fraction"] == 0.25


def test_bad_requests(small_simulator, slate_simulator):
    with pytest.raises(ConfigError, match="n_rounds must be >= 1; got 0"):
        generate_logs(small_simulator, n_rounds=0)
    with pytest.raises(ConfigError, match="uniform_fraction must be in"):
        generate_logs(small_simulator, n_rounds=10, uniform_fraction=1.5)
    with pytest.raises(ConfigError, match="slate_size"):
        generate_logs(small_simulator, slate_simulator.logging_policy(), n_rounds=10)
