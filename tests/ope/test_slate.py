import numpy as np
import pytest

from causalrec.ope import SlateIndependentIPS, SlateRewardInteractionIPS, SlateStandardIPS
from causalrec.platform.errors import ConfigError, DataError
from causalrec.simulators import generate_logs


def slate_arrays(simulator, target, n_rounds, seed):
    """Rows of a simulated slate log plus both policies' probabilities of each kind."""
    log = generate_logs(simulator, n_rounds=n_rounds, seed=seed)
    K = simulator.slate_size
    slates = log.item_id.reshape(-1, K)
    users = log.user_id[::K]
    prefix = target.prefix_probability(users, slates)
    marginal = target.marginal_probability(users, slates)
    logged_prefix = log.pscore_prefix.reshape(-1, K)
    kinds = {
        "joint": (np.repeat(logged_prefix[:, -1:], K, 1).ravel(), np.repeat(prefix[:, -1:], K, 1).ravel()),
        "marginal": (log.pscore, marginal.ravel()),
        "prefix": (log.pscore_prefix, prefix.ravel()),
    }  # fmt: skip
    return log, kinds


@pytest.mark.parametrize("cls", [SlateStandardIPS, SlateIndependentIPS, SlateRewardInteractionIPS])
def test_slate_estimators_recover_exact_value(slate_simulator, cls):
    from causalrec.platform.policy import SoftmaxPolicy

    target = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    truth = slate_simulator.policy_value(target)  # expected clicks per slate
    log, kinds = slate_arrays(slate_simulator, target, 40_000, seed=1)
    logging, evaluation = kinds[cls.pscore_kind]
    arrays = dict(
        reward=log.click,
        slate_id=log.round_id,
        position=log.position,
        pscore=logging,
        evaluation_pscore=evaluation,
    )
    estimate = cls().estimate(**arrays)
    low, high = cls().interval(**arrays, alpha=0.001)
    assert low < truth < high
    assert abs(estimate - truth) / truth < 0.1
    rewards = cls().round_rewards(**arrays)
    assert rewards.sum() / 40_000 == pytest.approx(estimate)


def test_slate_estimator_by_hand():
    arrays = dict(
        reward=np.array([1.0, 0.0, 1.0, 1.0]),
        slate_id=np.array([0, 0, 1, 1]),
        position=np.array([0, 1, 0, 1]),
        pscore=np.array([0.5, 0.25, 0.5, 0.5]),
        evaluation_pscore=np.array([0.25, 0.25, 1.0, 0.5]),
    )
    # weights 0.5, 1, 2, 1; rewards summed per slate: 0.5 and 3; mean over slates 1.75
    assert SlateIndependentIPS().estimate(**arrays) == pytest.approx(1.75)
    assert SlateIndependentIPS(clip=1.0).estimate(**arrays) == pytest.approx((0.5 + 2.0) / 2)


def test_slate_bad_inputs():
    good = dict(
        reward=np.ones(4),
        slate_id=np.array([0, 0, 1, 1]),
        position=np.array([0, 1, 0, 1]),
        pscore=np.full(4, 0.5),
        evaluation_pscore=np.full(4, 0.5),
    )
    with pytest.raises(DataError, match=r"pscore must be in \(0, 1\]; got 0.0 at row 2"):
        SlateRewardInteractionIPS().estimate(**{**good, "pscore": np.array([0.5, 0.5, 0.0, 0.5])})
    with pytest.raises(DataError, match=r"evaluation_pscore must be in \[0, 1\]; got 2.0 at row 1"):
        SlateStandardIPS().estimate(**{**good, "evaluation_pscore": np.array([0.5, 2.0, 0.5, 0.5])})
    with pytest.raises(DataError, match=r"slate_id must have shape \(4,\)"):
        SlateStandardIPS().estimate(**{**good, "slate_id": np.array([0, 0, 1])})
    with pytest.raises(DataError, match=r"position must be >= 0 \(0-based\); got -1 at row 0"):
        SlateStandardIPS().estimate(**{**good, "position": np.array([-1, 0, 0, 1])})
    with pytest.raises(ConfigError, match="clip must be >= 0; got -1"):
        SlateStandardIPS(clip=-1)
