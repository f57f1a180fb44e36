import itertools

import numpy as np
import pytest
import torch

from causalrec.methods.robust import worst_case_weights


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_matches_brute_force_over_vertices(seed):
    rng = np.random.default_rng(seed)
    losses = torch.tensor(rng.exponential(size=7))
    weights = torch.tensor(rng.uniform(0.5, 3.0, size=7))
    gamma = 2.0
    best = max(
        float((w * losses).sum() / w.sum())
        for choice in itertools.product([0, 1], repeat=7)
        for w in [
            torch.where(torch.tensor(choice, dtype=torch.bool), weights * gamma, weights / gamma)
        ]
    )
    adversarial = worst_case_weights(losses, weights, gamma)
    assert float((adversarial * losses).sum() / adversarial.sum()) == pytest.approx(best, rel=1e-12)
    assert torch.all(adversarial <= weights * gamma + 1e-12) and torch.all(
        adversarial >= weights / gamma - 1e-12
    )


def test_gamma_one_is_the_nominal_weights():
    losses, weights = torch.rand(10), torch.rand(10) + 0.1
    assert torch.equal(worst_case_weights(losses, weights, 1.0), weights)


def test_robust_loss_bounds_the_nominal_one_and_grows_with_gamma():
    from causalrec.methods.ips import _robust_loss

    rng = np.random.default_rng(3)
    losses = torch.tensor(rng.exponential(size=200))
    weights = torch.tensor(rng.uniform(0.2, 5.0, size=200))
    nominal = float((losses * weights).sum() / weights.sum())
    values = [float(_robust_loss(losses, weights, g)) for g in (1.0, 1.5, 3.0)]
    assert values[0] == pytest.approx(nominal)
    assert nominal < values[1] < values[2]


def test_adversarial_ips_trains_and_is_validated(small_simulator):
    from causalrec.methods import make_recommender
    from causalrec.platform.errors import ConfigError
    from causalrec.simulators import generate_logs

    logs = generate_logs(small_simulator, n_rounds=5_000, seed=0)
    plain = make_recommender("ips", epochs=2, seed=0).fit(logs)
    robust = make_recommender("ips", epochs=2, seed=0, adversarial_gamma=2.0).fit(logs)
    assert not np.allclose(plain.score(np.arange(5)), robust.score(np.arange(5)))
    with pytest.raises(ConfigError, match=r"adversarial_gamma must be >= 1; got 0\.5"):
        make_recommender("ips", adversarial_gamma=0.5).fit(logs)
    with pytest.raises(ConfigError, match="exposed setting only"):
        make_recommender("ips", adversarial_gamma=2.0, feedback="implicit").fit(logs)
