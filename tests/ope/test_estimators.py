"""Estimators against direct per-row implementations of their definitions (OBP's formulas)."""

import numpy as np
import pytest

from causalrec.ope import DM, DR, IPS, SNDR, SNIPS, DRos, RoundInputs, SwitchDR
from causalrec.ope.inputs import round_inputs_from_arrays
from causalrec.platform.errors import ConfigError, DataError


def make_world(n=3000, n_actions=6, len_list=1, seed=0):
    """A bandit whose logging and target policies and true mean rewards q are known."""
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(n_actions), size=(n, len_list)).transpose(0, 2, 1)
    target = rng.dirichlet(np.full(n_actions, 0.5), size=(n, len_list)).transpose(0, 2, 1)
    q = rng.uniform(0.05, 0.6, size=(n, n_actions, len_list))
    position = rng.integers(len_list, size=n)
    action = np.array([rng.choice(n_actions, p=logging[i, :, position[i]]) for i in range(n)])
    reward = rng.binomial(1, q[np.arange(n), action, position]).astype(float)
    q_hat = np.clip(q + rng.normal(0, 0.1, size=q.shape), 0, 1)
    return dict(
        logging=logging,
        target=target,
        q=q,
        q_hat=q_hat,
        position=position,
        action=action,
        reward=reward,
    )


def make_bandit(n=3000, n_actions=6, len_list=1, seed=0):
    world = make_world(n, n_actions, len_list, seed)
    target, position, action = world["target"], world["position"], world["action"]
    arrays = dict(
        reward=world["reward"],
        action=action,
        pscore=world["logging"][np.arange(n), action, position],
        action_dist=target if len_list > 1 else target[:, :, 0],
        position=position if len_list > 1 else None,
        q_hat=world["q_hat"] if len_list > 1 else world["q_hat"][:, :, 0],
    )
    truth = float(np.mean((target * world["q"]).sum(axis=1)[np.arange(n), position]))
    return arrays, truth


def clipped_estimand(world, name, clip):
    """What clipped IPS or DR estimates in expectation (K = 1), from the known world.

    E[min(w, c) r | x] = Σ_a π_0(a|x) min(π(a|x)/π_0(a|x), c) q(x, a), and DR adds the reward
    model's policy value and corrects with r − q̂ in place of r.
    """
    logging, target = world["logging"][:, :, 0], world["target"][:, :, 0]
    q, q_hat = world["q"][:, :, 0], world["q_hat"][:, :, 0]
    clipped = logging * np.minimum(target / logging, clip)
    if name == "ips":
        return float(np.mean((clipped * q).sum(axis=1)))
    return float(np.mean((target * q_hat).sum(axis=1) + (clipped * (q - q_hat)).sum(axis=1)))


def reference(name, arrays, **params):
    """Loop implementation straight from the formulas in Open Bandit Pipeline's docs."""
    dist, q_hat = arrays["action_dist"], arrays["q_hat"]
    if dist.ndim == 2:
        dist, q_hat = dist[:, :, None], q_hat[:, :, None]
    n = len(arrays["reward"])
    position = arrays["position"] if arrays["position"] is not None else np.zeros(n, int)
    w, dm, qf = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        a, k = arrays["action"][i], position[i]
        w[i] = dist[i, a, k] / arrays["pscore"][i]
        dm[i] = sum(dist[i, b, k] * q_hat[i, b, k] for b in range(dist.shape[1]))
        qf[i] = q_hat[i, a, k]
    r = arrays["reward"]
    if name == "dm":
        return dm.mean()
    if name == "ips":
        return (np.minimum(w, params.get("clip", np.inf)) * r).mean()
    if name == "snips":
        return (w * r).mean() / w.mean()
    if name == "dr":
        return (dm + np.minimum(w, params.get("clip", np.inf)) * (r - qf)).mean()
    if name == "sndr":
        return (dm + w * (r - qf) / w.mean()).mean()
    if name == "switch_dr":
        return (dm + (w <= params["tau"]) * w * (r - qf)).mean()
    if name == "dros":
        lam = params["lambda_"]
        return (dm + lam * w / (w**2 + lam) * (r - qf)).mean()
    raise AssertionError(name)


ESTIMATORS = [
    (DM(), "dm", {}),
    (IPS(), "ips", {}),
    (IPS(clip=2.0), "ips", {"clip": 2.0}),
    (SNIPS(), "snips", {}),
    (DR(), "dr", {}),
    (DR(clip=1.5), "dr", {"clip": 1.5}),
    (SNDR(), "sndr", {}),
    (SwitchDR(tau=2.0), "switch_dr", {"tau": 2.0}),
    (DRos(lambda_=3.0), "dros", {"lambda_": 3.0}),
]


@pytest.mark.parametrize("len_list", [1, 3])
@pytest.mark.parametrize(("estimator", "name", "params"), ESTIMATORS)
def test_matches_reference_definition(estimator, name, params, len_list):
    arrays, _ = make_bandit(n=400, len_list=len_list, seed=len_list)
    assert estimator.estimate(**arrays) == pytest.approx(
        reference(name, arrays, **params), rel=1e-10
    )
    rewards = estimator.round_rewards(**arrays)
    assert rewards.shape == (400,)
    assert rewards.mean() == pytest.approx(estimator.estimate(**arrays), rel=1e-10)


def test_limits_of_hyperparameters():
    arrays, _ = make_bandit(n=500)
    dr, dm = DR().estimate(**arrays), DM().estimate(**arrays)
    assert SwitchDR().estimate(**arrays) == pytest.approx(dr)
    assert SwitchDR(tau=0.0).estimate(**arrays) == pytest.approx(dm)
    assert DRos(lambda_=np.inf).estimate(**arrays) == pytest.approx(dr)
    assert DRos(lambda_=0.0).estimate(**arrays) == pytest.approx(dm)


def test_defaults_follow_open_bandit_pipeline():
    """OBP: SwitchDoublyRobust(lambda_=inf), DoublyRobustWithShrinkage(lambda_=0.0)."""
    arrays, _ = make_bandit(n=500)
    assert DRos().lambda_ == 0.0
    assert DRos().estimate(**arrays) == DM().estimate(**arrays)
    assert SwitchDR().tau == np.inf
    assert IPS(clip=np.inf).estimate(**arrays) == pytest.approx(IPS().estimate(**arrays))


UNCLIPPED = [case for case in ESTIMATORS[1:] if "clip" not in case[2]]
CLIPPED = [case for case in ESTIMATORS if "clip" in case[2]]


@pytest.mark.parametrize(("estimator", "name", "params"), UNCLIPPED)
def test_unbiased_family_is_close_to_truth(estimator, name, params):
    arrays, truth = make_bandit(n=20_000, seed=7)
    low, high = estimator.interval(**arrays)
    assert low < truth < high


@pytest.mark.parametrize(("estimator", "name", "params"), CLIPPED)
def test_clipped_estimators_cover_their_clipped_estimand(estimator, name, params):
    """Clipping trades bias for variance: the interval covers the clipped estimand."""
    arrays, truth = make_bandit(n=20_000, seed=7)
    estimand = clipped_estimand(make_world(n=20_000, seed=7), name, params["clip"])
    low, high = estimator.interval(**arrays)
    assert low < estimand < high
    if name == "ips":  # IPS has no reward model to absorb the clipped mass: biased low
        assert estimand < truth - 0.05 and not low < truth < high


# Five rounds, three actions, chosen so that the weights w = π(a)/π_0(a) are 0.5, 2, 4, 1, 8.
HAND_MADE = dict(
    reward=np.array([1.0, 0.0, 1.0, 1.0, 1.0]),
    action=np.array([0, 1, 2, 0, 1]),
    pscore=np.array([0.5, 0.25, 0.125, 0.5, 0.0625]),
    action_dist=np.array(
        [[0.25, 0.5, 0.25], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]
    ),
    q_hat=np.array(
        [[0.2, 0.4, 0.6], [0.1, 0.3, 0.5], [0.0, 0.2, 0.4], [0.5, 0.5, 0.5], [0.4, 0.2, 0.8]]
    ),
)


def hand_made_formulas(clip):
    """IPS and DR of HAND_MADE straight from their definitions, per round."""
    a = HAND_MADE
    rows = np.arange(5)
    w = np.minimum(a["action_dist"][rows, a["action"]] / a["pscore"], clip)
    q_factual = a["q_hat"][rows, a["action"]]
    q_policy = (a["action_dist"] * a["q_hat"]).sum(axis=1)
    return w * a["reward"], q_policy + w * (a["reward"] - q_factual)


@pytest.mark.parametrize("clip", [np.inf, 3.0, 8.0, 1.0, 0.0])
def test_clipped_ips_and_dr_on_hand_made_rounds(clip):
    ips_rounds, dr_rounds = hand_made_formulas(clip)
    for estimator, expected in ((IPS(clip=clip), ips_rounds), (DR(clip=clip), dr_rounds)):
        np.testing.assert_allclose(estimator.round_rewards(**HAND_MADE), expected, rtol=1e-12)
        assert estimator.estimate(**HAND_MADE) == pytest.approx(expected.mean(), rel=1e-12)
        inputs = round_inputs_from_arrays(**HAND_MADE)
        assert estimator.clipped_share(inputs) == pytest.approx(
            np.mean(np.array([0.5, 2, 4, 1, 8]) > clip)
        )


def test_clipping_that_binds_removes_exactly_the_excess_weight():
    # By hand: with clip = 3 the weights 4 and 8 become 3 (excess 1 and 5, rounds 2 and 4).
    # IPS: (0.5 + 0 + 4 + 1 + 8) / 5 = 2.7 unclipped, (0.5 + 0 + 3 + 1 + 3) / 5 = 1.5 clipped.
    # DR, with q̂^π = (0.4, 0.4, 0.3, 0.5, 0.4) and r − q̂ = (0.8, −0.3, 0.6, 0.5, 0.8):
    # (0.8 − 0.2 + 2.7 + 1.0 + 6.8) / 5 = 2.22 unclipped, (0.8 − 0.2 + 2.1 + 1.0 + 2.8) / 5 = 1.3.
    assert IPS().estimate(**HAND_MADE) == pytest.approx(2.7, rel=1e-12)
    assert IPS(clip=3.0).estimate(**HAND_MADE) == pytest.approx(1.5, rel=1e-12)
    assert DR().estimate(**HAND_MADE) == pytest.approx(2.22, rel=1e-12)
    assert DR(clip=3.0).estimate(**HAND_MADE) == pytest.approx(1.3, rel=1e-12)
    # The difference is the mean excess weight times r (IPS) or r − q̂ (DR).
    excess = np.array([0.0, 0.0, 1.0, 0.0, 5.0])
    residual = np.array([0.8, -0.3, 0.6, 0.5, 0.8])
    ips_gap = IPS().estimate(**HAND_MADE) - IPS(clip=3.0).estimate(**HAND_MADE)
    dr_gap = DR().estimate(**HAND_MADE) - DR(clip=3.0).estimate(**HAND_MADE)
    assert ips_gap == pytest.approx(np.mean(excess * HAND_MADE["reward"]), rel=1e-12)  # 1.2
    assert dr_gap == pytest.approx(np.mean(excess * residual), rel=1e-12)  # 0.92
    # clip = 0 leaves DR as the direct method and IPS at zero.
    assert IPS(clip=0.0).estimate(**HAND_MADE) == 0.0
    assert DR(clip=0.0).estimate(**HAND_MADE) == pytest.approx(2.0 / 5, rel=1e-12)


def test_sparse_path_equals_dense_path():
    arrays, _ = make_bandit(n=300, len_list=2, seed=3)
    inputs = round_inputs_from_arrays(**arrays)
    assert isinstance(inputs, RoundInputs)
    for estimator, _, _ in ESTIMATORS:
        assert estimator.estimate_from_inputs(inputs) == pytest.approx(estimator.estimate(**arrays))


def test_interval_methods_agree_roughly_and_are_seeded():
    arrays, _ = make_bandit(n=5000, seed=11)
    normal = DR().interval(**arrays)
    boot = DR().interval(**arrays, method="bootstrap", n_bootstrap=400, seed=1)
    assert boot == DR().interval(**arrays, method="bootstrap", n_bootstrap=400, seed=1)
    width = normal[1] - normal[0]
    assert abs(boot[0] - normal[0]) < 0.2 * width and abs(boot[1] - normal[1]) < 0.2 * width
    with pytest.raises(ConfigError, match=r"interval must be one of .*; got 'exact'"):
        DR().interval(**arrays, method="exact")
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\); got 1.5"):
        DR().interval(**arrays, alpha=1.5)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: IPS(clip=-1), r"clip must be >= 0; got -1"),
        (lambda: DR(clip=float("nan")), r"clip must be >= 0; got nan"),
        (lambda: SwitchDR(tau=-0.5), r"tau must be >= 0; got -0.5"),
        (lambda: DRos(lambda_=-2), r"lambda_ must be >= 0; got -2"),
    ],
)
def test_bad_hyperparameters(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()


def _bad(arrays, **changes):
    return {**arrays, **changes}


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda a: {"pscore": np.r_[0.0, a["pscore"][1:]]}, r"pscore must be in \(0, 1\]; got 0.0 at row 0"),
        (lambda a: {"pscore": np.r_[a["pscore"][:5], 1.5, a["pscore"][6:]]}, r"got 1.5 at row 5"),
        (lambda a: {"pscore": np.r_[np.nan, a["pscore"][1:]]}, r"pscore must be in \(0, 1\]; got nan"),
        (lambda a: {"pscore": np.r_[np.inf, a["pscore"][1:]]}, r"got inf at row 0"),
        (lambda a: {"pscore": a["pscore"][:-1]}, r"pscore must have length 50"),
        (lambda a: {"action": a["action"][:-2]}, r"action must have shape \(50,\)"),
        (lambda a: {"action": np.r_[a["action"][:3], 6, a["action"][4:]]}, r"action must be in \[0, n_actions=6\); got 6 at row 3"),
        (lambda a: {"action": np.r_[-1, a["action"][1:]]}, r"got -1 at row 0"),
        (lambda a: {"action_dist": a["action_dist"] * 1.1}, r"action_dist must sum to 1 .* row 0, position 0 sums to 1.1"),
        (lambda a: {"action_dist": np.r_[[np.r_[1.5, -0.5, 0, 0, 0, 0]], a["action_dist"][1:]]}, r"action_dist must be non-negative; .* row 0"),
        (lambda a: {"action_dist": a["action_dist"][:10]}, r"action_dist must have shape \(n_rounds=50"),
        (lambda a: {"q_hat": a["q_hat"][:, :3]}, r"q_hat must have the shape of action_dist \(50, 6, 1\); got \(50, 3, 1\)"),
        (lambda a: {"q_hat": None}, r"q_hat .* is required"),
        (lambda a: {"reward": np.array([])}, r"the log is empty"),
        (lambda a: {"reward": np.r_[np.nan, a["reward"][1:]]}, r"reward must be finite; got nan at row 0"),
    ],
)  # fmt: skip
def test_bad_inputs_name_argument_and_value(change, pattern):
    arrays, _ = make_bandit(n=50, seed=2)
    with pytest.raises(DataError, match=pattern):
        DR().estimate(**_bad(arrays, **change(arrays)))


def test_positions_checked_for_slates():
    arrays, _ = make_bandit(n=40, len_list=3, seed=4)
    with pytest.raises(DataError, match="position is required when len_list > 1"):
        IPS().estimate(**{**arrays, "position": None})
    bad = arrays["position"].copy()
    bad[7] = 3
    with pytest.raises(DataError, match=r"position must be in \[0, len_list=3\); got 3 at row 7"):
        IPS().estimate(**{**arrays, "position": bad})


def test_a_self_normalised_estimate_without_support_is_refused_not_divided_by_zero():
    """Every importance weight 0 (the target never shows a logged item): SNIPS is undefined.

    It raised ZeroDivisionError (a 500 through Serve's /evaluate); now a DataError saying why.
    """
    from causalrec.ope.intervals import EstimatorTerms
    from causalrec.platform.errors import DataError

    zeros = np.zeros(5)
    terms = EstimatorTerms(baseline=None, correction=zeros, normalizer=zeros)
    for method in (terms.value, terms.contributions, terms.influence):
        with pytest.raises(DataError, match="no weight to any logged impression"):
            method()
    supported = EstimatorTerms(
        baseline=None, correction=np.array([1.0, 0.0]), normalizer=np.ones(2)
    )
    assert supported.value() == 0.5
