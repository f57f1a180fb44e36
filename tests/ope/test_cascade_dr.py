import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from causalrec.ope.cascade_dr import SlateCascadeDR
from causalrec.ope.slate import SlateRewardInteractionIPS
from causalrec.platform.errors import ConfigError, DataError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "obp"
REFERENCE = FIXTURES / "cascade_dr_reference.npz"
ARRAYS = (
    "slate_id",
    "action",
    "reward",
    "position",
    "pscore_cascade",
    "evaluation_policy_pscore_cascade",
    "q_hat",
    "evaluation_policy_action_dist",
)
PER_ACTION = ("q_hat", "evaluation_policy_action_dist")


def stored_cases():
    with np.load(REFERENCE) as stored:
        for name in stored["cases"]:
            arrays = {key: stored[f"{name}.{key}"] for key in ARRAYS}
            arrays = {
                k: v.astype(np.float64 if v.dtype.kind == "f" else np.int64)
                for k, v in arrays.items()
            }
            arrays["reward"] = arrays["reward"].astype(np.float64)
            yield pytest.param(
                int(stored[f"{name}.len_list"]),
                int(stored[f"{name}.n_unique_action"]),
                arrays,
                float(stored[f"{name}.obp_estimate"]),
                stored[f"{name}.obp_round_rewards"],
                id=str(name),
            )


def generator_module():
    """The reference generator (its case builder and OBP call), imported from its file."""
    spec = importlib.util.spec_from_file_location(
        "make_cascade_dr_reference", FIXTURES / "make_cascade_dr_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shuffled(arrays, n_actions, seed):
    """The same log with its rows in a random order, each row's q̂ and π(·|prefix) with it."""
    n = len(arrays["reward"])
    perm = np.random.default_rng(seed).permutation(n)
    return {
        k: v.reshape(n, n_actions)[perm].ravel() if k in PER_ACTION else v[perm]
        for k, v in arrays.items()
    }


# (a) Catches any departure from OBP's arithmetic: w_k instead of w_{k-1} on the q̂ term, q̂ of
# the wrong row or action, per-slate sums in another order than np.unique(slate_id), a missing
# w_0 = 1 at the top of a slate (the greedy cases have many zero weights, the permuted-id case
# slate ids that are neither 0..S-1 nor sorted).
@pytest.mark.parametrize(
    ("len_list", "n_actions", "arrays", "obp_estimate", "obp_rounds"), list(stored_cases())
)
def test_equals_stored_obp_values(len_list, n_actions, arrays, obp_estimate, obp_rounds):
    estimator = SlateCascadeDR(len_list=len_list, n_unique_action=n_actions)
    assert abs(estimator.estimate(**arrays) - obp_estimate) < 1e-10
    np.testing.assert_allclose(estimator.round_rewards(**arrays), obp_rounds, rtol=0, atol=1e-10)


# (a') Catches reading rows by their place in the array rather than by (slate_id, position), as
# OBP does (OBP's own number changes on a log with its rows shuffled whenever len_list > 1).
@pytest.mark.parametrize(
    ("len_list", "n_actions", "arrays", "obp_estimate", "obp_rounds"), list(stored_cases())
)
def test_row_order_does_not_matter(len_list, n_actions, arrays, obp_estimate, obp_rounds):
    estimator = SlateCascadeDR(len_list=len_list, n_unique_action=n_actions)
    mixed = shuffled(arrays, n_actions, seed=len_list * n_actions)
    assert abs(estimator.estimate(**mixed) - obp_estimate) < 1e-10
    np.testing.assert_allclose(estimator.round_rewards(**mixed), obp_rounds, rtol=0, atol=1e-10)


# (b) The same as (a) on fresh inputs, against OBP itself. OBP 0.5.7 supports Python < 3.11
# only, so it is not a CI dependency; run with the venv of the generator's docstring.
@pytest.mark.parametrize(
    ("len_list", "n_actions", "greedy"),
    [(1, 6, False), (2, 5, True), (4, 8, False), (6, 12, False)],
)
def test_equals_live_obp(len_list, n_actions, greedy):
    pytest.importorskip("obp", reason="OBP supports Python < 3.11 only; not a CI dependency")
    generator = generator_module()
    rng = np.random.default_rng(np.random.SeedSequence([len_list, n_actions]))
    arrays = generator.make_case(rng, len_list, n_actions, 120, greedy, True)
    obp_estimate, obp_rounds = generator.obp_reference(arrays, len_list, n_actions)
    estimator = SlateCascadeDR(len_list=len_list, n_unique_action=n_actions)
    assert abs(estimator.estimate(**arrays) - obp_estimate) < 1e-10
    np.testing.assert_allclose(estimator.round_rewards(**arrays), obp_rounds, rtol=0, atol=1e-10)


# Catches an inverted or mis-indexed prefix weight: with q̂ = 0 Cascade-DR is reward-interaction
# IPS, which slate.py computes independently.
@pytest.mark.parametrize(
    ("len_list", "n_actions", "arrays", "obp_estimate", "obp_rounds"), list(stored_cases())[:4]
)
def test_zero_q_hat_is_rips(len_list, n_actions, arrays, obp_estimate, obp_rounds):
    zero = {**arrays, "q_hat": np.zeros_like(arrays["q_hat"])}
    rips = SlateRewardInteractionIPS().estimate(
        reward=arrays["reward"],
        slate_id=arrays["slate_id"],
        position=arrays["position"],
        pscore=arrays["pscore_cascade"],
        evaluation_pscore=arrays["evaluation_policy_pscore_cascade"],
    )
    assert SlateCascadeDR(len_list, n_actions).estimate(**zero) == pytest.approx(rips, rel=1e-12)


# (c) A tabular cascade world: 4 actions, slates of 3, Plackett–Luce logging and evaluation
# policies, click probability at position k depending on the whole prefix a_1..a_k.
THETA_LOGGING = np.array([0.0, 0.3, -0.2, 0.5])
THETA_TARGET = np.array([1.0, -0.5, 0.2, 0.0])
RELEVANCE = np.array([0.8, 0.5, 0.3, 0.1])
EXAMINATION = np.array([1.0, 0.8, 0.6])
K, A = 3, 4


def conditional(theta, prefix):
    """π(· | prefix) of a Plackett–Luce policy, shape (A,)."""
    weights = np.exp(theta)
    weights[list(prefix)] = 0.0
    return weights / weights.sum()


def click_probability(prefix):
    """P(click at the last position of the prefix | prefix): earlier relevant items satiate."""
    *above, item = prefix
    return RELEVANCE[item] * EXAMINATION[len(above)] * np.prod(1 - 0.5 * RELEVANCE[above])


def true_q(prefix):
    """E_π[clicks at positions len(prefix)..K | prefix]: the exact Q function."""
    value = click_probability(prefix)
    if len(prefix) < K:
        pi = conditional(THETA_TARGET, prefix)
        value += sum(pi[a] * true_q((*prefix, a)) for a in range(A) if a not in prefix)
    return value


def tabular_world():
    """Per ordered slate s (24 of them): probabilities, q̂ tables and clicks, and the exact value."""
    slates = np.array(list(itertools.permutations(range(A), K)))
    tables = {
        key: np.zeros((len(slates), K, *shape))
        for key, shape in (("logging", ()), ("target", ()), ("mu", ()), ("dist", (A,)), ("q", (A,)))
    }
    for s, slate in enumerate(slates):
        for k in range(K):
            prefix = tuple(slate[:k])
            tables["logging"][s, k] = conditional(THETA_LOGGING, prefix)[slate[k]]
            tables["target"][s, k] = conditional(THETA_TARGET, prefix)[slate[k]]
            tables["mu"][s, k] = click_probability(tuple(slate[: k + 1]))
            tables["dist"][s, k] = conditional(THETA_TARGET, prefix)
            tables["q"][s, k] = [true_q((*prefix, a)) if a not in prefix else 0.0 for a in range(A)]
    tables["logging"] = np.cumprod(tables["logging"], axis=1)
    tables["target"] = np.cumprod(tables["target"], axis=1)
    value = float(tables["target"][:, -1] @ tables["mu"].sum(axis=1))
    return slates, tables, value


def simulate(n_slates, seed):
    slates, tables, value = tabular_world()
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    drawn = rng.choice(len(slates), size=n_slates, p=tables["logging"][:, -1])
    arrays = dict(
        slate_id=np.repeat(np.arange(n_slates), K),
        action=slates[drawn].ravel(),
        reward=(rng.random((n_slates, K)) < tables["mu"][drawn]).astype(np.float64).ravel(),
        position=np.tile(np.arange(K), n_slates),
        pscore_cascade=tables["logging"][drawn].ravel(),
        evaluation_policy_pscore_cascade=tables["target"][drawn].ravel(),
        q_hat=tables["q"][drawn].ravel(),
        evaluation_policy_action_dist=tables["dist"][drawn].ravel(),
    )
    return arrays, value


def test_unbiased_in_a_tabular_cascade_world():
    # Slates are i.i.d., so one log of n slates stands for n logs of one: the mean of the
    # per-slate contributions estimates the estimator's expectation with standard error se.
    n = 100_000
    arrays, value = simulate(n, seed=7)
    estimator = SlateCascadeDR(len_list=K, n_unique_action=A)
    dist = arrays["evaluation_policy_action_dist"].reshape(-1, K, A)[:, 0]
    # The world is right: with the true Q the direct method (top position) is the exact value.
    assert np.allclose(
        (dist * arrays["q_hat"].reshape(-1, K, A)[:, 0]).sum(axis=1), value, atol=1e-12
    )

    # True q̂: unbiased, and less variable than reward-interaction IPS (q̂ = 0). Catches weights
    # w_k on the q̂ term (not w_{k-1}), residuals of the wrong action, a missing position.
    rounds = estimator.round_rewards(**arrays)
    se = rounds.std(ddof=1) / np.sqrt(n)
    assert abs(rounds.mean() - value) < 4 * se
    rips = estimator.round_rewards(**{**arrays, "q_hat": np.zeros_like(arrays["q_hat"])})
    assert rounds.std() < 0.8 * rips.std()

    # A wrong, constant q̂ = 1.5: still unbiased (the DR property), while its direct-method part
    # alone is 1.5, far from the value. Catches dropping or mis-weighting the residual term.
    constant = {**arrays, "q_hat": np.full_like(arrays["q_hat"], 1.5)}
    rounds = estimator.round_rewards(**constant)
    se = rounds.std(ddof=1) / np.sqrt(n)
    assert abs(rounds.mean() - value) < 4 * se
    assert abs(1.5 - value) > 50 * se

    # The interval treats slates as units and covers the value. Catches rows taken as units.
    low, high = estimator.interval(**constant, alpha=0.01)
    assert low < value < high
    assert (high - low) / 2 == pytest.approx(2.5758 * se, rel=1e-3)


def good_inputs():
    """Two slates of two positions over three actions, rows out of order."""
    return dict(
        slate_id=np.array([0, 1, 0, 1]),
        action=np.array([0, 2, 1, 0]),
        reward=np.array([1.0, 0.0, 0.0, 1.0]),
        position=np.array([0, 0, 1, 1]),
        pscore_cascade=np.array([0.5, 0.4, 0.25, 0.2]),
        evaluation_policy_pscore_cascade=np.array([0.6, 0.2, 0.3, 0.0]),
        q_hat=np.linspace(0, 1, 12),
        evaluation_policy_action_dist=np.full(12, 1 / 3),
    )


def test_small_case_by_hand():
    # Slate 0: w = (1.2, 1.2), actions (0, 1), rewards (1, 0), q̂ rows 0 and 2 (entries 0..2, 6..8).
    # Catches w_{k-1} mis-shifted across slates and q̂/π rows not travelling with their rows.
    q = np.linspace(0, 1, 12).reshape(4, 3)
    slate0 = 1.2 * (1 - q[0, 0]) + q[0].mean() + 1.2 * (0 - q[2, 1]) + 1.2 * q[2].mean()
    slate1 = 0.5 * (0 - q[1, 2]) + q[1].mean() + 0.0 * (1 - q[3, 0]) + 0.5 * q[3].mean()
    rounds = SlateCascadeDR(2, 3).round_rewards(**good_inputs())
    np.testing.assert_allclose(rounds, [slate0, slate1], rtol=1e-14)


BAD_INPUTS = [
    ({"reward": np.ones((4, 1))}, r"reward must be 1-d; got shape \(4, 1\)"),
    ({"reward": np.array([1.0, np.nan, 0.0, 1.0])}, r"reward must be finite; got nan at row 1"),
    ({"slate_id": np.array([0, 1, 0])}, r"slate_id must have shape \(4,\) \(as reward\); got \(3,\)"),
    ({"position": np.array([0, 0, 1, 2])}, r"position must be in \[0, len_list=2\); got 2 at row 3"),
    ({"action": np.array([3, 2, 1, 0])}, r"action must be in \[0, n_unique_action=3\); got 3 at row 0"),
    ({"action": np.array([0.5, 2, 1, 0])}, r"action must be integers; got dtype float64"),
    ({"pscore_cascade": np.array([0.5, 0.4, 0.0, 0.2])}, r"pscore_cascade must be in \(0, 1\]; got 0.0 at row 2"),
    ({"evaluation_policy_pscore_cascade": np.array([0.6, 1.5, 0.3, 0.0])}, r"evaluation_policy_pscore_cascade must be in \[0, 1\]; got 1.5 at row 1"),
    ({"q_hat": np.zeros(11)}, r"q_hat must have shape \(n_rows \* n_unique_action,\) = \(12,\); got \(11,\)"),
    ({"q_hat": np.r_[np.zeros(7), np.inf, np.zeros(4)]}, r"q_hat must be finite; got inf at row 2 \(entry 7\)"),
    ({"evaluation_policy_action_dist": np.full((4, 3), 1 / 3)}, r"evaluation_policy_action_dist must have shape \(n_rows \* n_unique_action,\) = \(12,\); got \(4, 3\)"),
    ({"evaluation_policy_action_dist": np.r_[np.full(3, 1 / 3), [1.2, -0.2, 0.0], np.full(6, 1 / 3)]}, r"evaluation_policy_action_dist must be non-negative; got -0.2 at row 1"),
    ({"evaluation_policy_action_dist": np.r_[np.full(9, 1 / 3), [0.3, 0.3, 0.3]]}, r"must sum to 1 over the n_unique_action=3 actions of each row; row 3 sums to 0.9"),
    ({"slate_id": np.array([0, 1, 0, 0])}, r"every slate must have one row per position \(len_list=2\); slate 0 has 3 rows"),
    ({"position": np.array([0, 0, 1, 0])}, r"every slate needs each position 0..1 once; slate 1 has positions \[0, 0\]"),
    ({"pscore_cascade": np.array([0.5, 0.4, 0.6, 0.2])}, r"pscore_cascade must not increase along a slate .*; slate 0 has 0.6 at position 1 after 0.5 at position 0"),
    ({"evaluation_policy_pscore_cascade": np.array([0.6, 0.2, 0.3, 0.25])}, r"evaluation_policy_pscore_cascade must not increase .*; slate 1 has 0.25 at position 1 after 0.2"),
]  # fmt: skip


# (d) Each row catches a missing or misworded check of one argument.
@pytest.mark.parametrize(("override", "match"), BAD_INPUTS)
def test_bad_inputs(override, match):
    with pytest.raises(DataError, match=match):
        SlateCascadeDR(len_list=2, n_unique_action=3).estimate(**{**good_inputs(), **override})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(len_list=0, n_unique_action=3), r"len_list must be an integer >= 1; got 0"),
        (dict(len_list=2.0, n_unique_action=3), r"len_list must be an integer >= 1; got 2.0"),
        (
            dict(len_list=2, n_unique_action=True),
            r"n_unique_action must be an integer >= 1; got True",
        ),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SlateCascadeDR(**kwargs)


def test_betting_interval_and_policy_terms_are_refused():
    estimator = SlateCascadeDR(len_list=2, n_unique_action=3)
    with pytest.raises(ConfigError, match="betting"):
        estimator.interval(**good_inputs(), method="betting")
    with pytest.raises(
        DataError, match=r"cascade_dr is array-level only for now.*estimate\(\.\.\.\)"
    ):
        estimator.policy_terms(None)
