import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from causalrec.methods.ips import _robust_loss
from causalrec.methods.robust import worst_case_weights


def self_normalised(losses, weights) -> float:
    return float((weights * losses).sum() / weights.sum())


def vertex_worst_case(losses: np.ndarray, weights: np.ndarray, gamma: float) -> float:
    """max Σ w̃ℓ / Σ w̃ over w̃ ∈ [w/Γ, wΓ] by trying every vertex of the box.

    A linear-fractional objective with a positive denominator is quasi-linear, so its maximum
    over a box sits at a vertex: one of the 2^b assignments of w/Γ or wΓ.
    """
    return max(
        self_normalised(
            losses, np.where(np.array(upper, dtype=bool), weights * gamma, weights / gamma)
        )
        for upper in itertools.product([0, 1], repeat=len(losses))
    )


def lp_worst_case(losses: np.ndarray, weights: np.ndarray, gamma: float) -> float:
    """The same maximum as a linear programme (Charnes–Cooper: y = t·w̃, Σ y = 1, t >= 0).

    max ℓ·y subject to t·w/Γ <= y <= t·wΓ and Σ y = 1; solved by HiGHS, no vertex reasoning.
    """
    b = len(losses)
    eye = np.eye(b)
    a_ub = np.block([[eye, -(weights * gamma)[:, None]], [-eye, (weights / gamma)[:, None]]])
    result = linprog(
        c=np.r_[-losses, 0.0],
        A_ub=a_ub,
        b_ub=np.zeros(2 * b),
        A_eq=np.r_[np.ones(b), 0.0][None, :],
        b_eq=[1.0],
        bounds=[(0, None)] * (b + 1),
        method="highs",
    )
    assert result.status == 0, result.message
    return -result.fun


def test_hand_made_batch():
    # Γ = 2, unit weights: the box is {0.5, 2}^3. Upper weight on the loss 3 only gives
    # (0.5 + 6 + 1) / (0.5 + 2 + 0.5) = 2.5; on losses 3 and 2, (0.5 + 6 + 4) / 4.5 = 2.33;
    # on none, 2.0. So the worst case is 2.5 with weights (0.5, 2, 0.5).
    losses = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    weights = torch.ones(3, dtype=torch.float64)
    adversarial = worst_case_weights(losses, weights, 2.0)
    torch.testing.assert_close(adversarial, torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64))
    assert float(_robust_loss(losses, weights, 2.0)) == pytest.approx(2.5, rel=1e-15)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma", [1.3, 2.0, 6.0])
def test_closed_form_matches_brute_force_over_vertices(seed, gamma):
    rng = np.random.default_rng(seed)
    losses = rng.exponential(size=8)
    if seed == 4:  # ties among the losses
        losses[[1, 5, 6]] = losses[0]
    weights = rng.uniform(0.5, 3.0, size=8)
    best = vertex_worst_case(losses, weights, gamma)
    adversarial = worst_case_weights(torch.tensor(losses), torch.tensor(weights), gamma).numpy()
    assert self_normalised(losses, adversarial) == pytest.approx(best, rel=1e-12)
    assert float(_robust_loss(torch.tensor(losses), torch.tensor(weights), gamma)) == pytest.approx(
        best, rel=1e-12
    )
    # The weights returned are a vertex of the box: each at w/Γ or wΓ.
    upper, lower = (
        np.isclose(adversarial, weights * gamma),
        np.isclose(adversarial, weights / gamma),
    )
    assert (upper | lower).all()


@pytest.mark.parametrize("seed", range(3))
def test_closed_form_matches_linear_programme_on_a_larger_batch(seed):
    rng = np.random.default_rng(10 + seed)
    losses, weights = rng.exponential(size=60), rng.lognormal(0.0, 1.0, size=60)
    for gamma in (1.1, 2.5, 10.0):
        value = float(_robust_loss(torch.tensor(losses), torch.tensor(weights), gamma))
        assert value == pytest.approx(lp_worst_case(losses, weights, gamma), rel=1e-8)


def test_gamma_one_is_the_plain_self_normalised_loss_exactly():
    losses, weights = torch.rand(10), torch.rand(10) + 0.1
    assert torch.equal(worst_case_weights(losses, weights, 1.0), weights)
    assert float(_robust_loss(losses, weights, 1.0)) == float(
        (losses * weights).sum() / weights.sum()
    )


def test_robust_loss_is_non_decreasing_in_gamma_and_bounded_by_the_largest_loss():
    rng = np.random.default_rng(3)
    losses = torch.tensor(rng.exponential(size=200))
    weights = torch.tensor(rng.uniform(0.2, 5.0, size=200))
    nominal = float((losses * weights).sum() / weights.sum())
    gammas = np.r_[1.0, np.geomspace(1.001, 1e4, 60)]
    values = np.array([float(_robust_loss(losses, weights, g)) for g in gammas])
    assert values[0] == nominal
    assert (np.diff(values) >= -1e-12).all()
    assert values[1] > nominal  # any Γ > 1 moves weight towards the larger losses
    assert values[-1] <= float(losses.max())
    # As Γ → ∞ the mass goes to the largest loss: the vertex with only it up is within
    # ℓ_max · Σw / (Γ² w_max) of it, and the worst case is no lower than that vertex.
    top = int(losses.argmax())
    assert values[-1] == pytest.approx(
        float(losses.max()), rel=float(weights.sum() / weights[top]) / 1e8
    )


def test_adversarial_weights_are_constants_of_the_gradient():
    """Danskin: the gradient of the worst case is that of the loss at the worst-case weights."""
    rng = np.random.default_rng(4)
    losses = torch.tensor(rng.exponential(size=12), requires_grad=True)
    weights = torch.tensor(rng.uniform(0.5, 2.0, size=12))
    _robust_loss(losses, weights, 3.0).backward()
    adversarial = worst_case_weights(losses, weights, 3.0)
    torch.testing.assert_close(losses.grad, adversarial / adversarial.sum())


def bce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example logistic loss, −y log σ(x) − (1 − y) log(1 − σ(x)), in plain numpy."""
    return np.logaddexp(0.0, logits) - labels * logits


@pytest.mark.parametrize("method", ["ips", "snips"])
def test_adversarial_gamma_reaches_the_mini_batch_loss(method):
    from causalrec.methods import make_recommender

    rng = np.random.default_rng(5)
    logits, labels = rng.normal(size=9), rng.integers(0, 2, size=9).astype(float)
    weights = rng.uniform(0.3, 3.0, size=9)
    batch = {
        "logits": torch.tensor(logits, dtype=torch.float64),
        "labels": torch.tensor(labels, dtype=torch.float64),
        "weight": torch.tensor(weights, dtype=torch.float64),
    }
    losses = bce(logits, labels)
    plain = make_recommender(method)._loss(batch)
    expected_plain = (
        np.mean(losses * weights) if method == "ips" else self_normalised(losses, weights)
    )
    assert float(plain) == pytest.approx(expected_plain, rel=1e-12)
    for gamma in (1.5, 4.0):
        robust = make_recommender(method, adversarial_gamma=gamma)._loss(batch)
        assert float(robust) == pytest.approx(vertex_worst_case(losses, weights, gamma), rel=1e-12)


@pytest.mark.parametrize("method", ["ips", "snips"])
def test_adversarial_training_minimises_the_worst_case_of_the_whole_log(small_simulator, method):
    """One full-batch step at (nearly) frozen weights: the recorded loss is the worst case.

    With lr ≈ 0 the fitted network is its initialisation, so the one training loss recorded is
    the worst-case self-normalised loss of the whole log at that network, with the normalised
    inverse logged propensities as nominal weights; solved here as a linear programme.
    """
    from causalrec.methods import make_recommender
    from causalrec.simulators import generate_logs

    logs = generate_logs(small_simulator, n_rounds=1_500, seed=0)
    params = dict(epochs=1, batch_size=10_000, lr=1e-12, seed=0, device="cpu")
    model = make_recommender(method, adversarial_gamma=2.0, **params).fit(logs)
    with torch.no_grad():
        logits = model.network_(torch.from_numpy(logs.user_id), torch.from_numpy(logs.item_id))
    losses = bce(logits.double().numpy(), logs.click.astype(float))
    weights = (1 / logs.pscore) / np.mean(1 / logs.pscore)
    worst = lp_worst_case(losses, weights, 2.0)
    assert model.history_[0] == pytest.approx(worst, rel=1e-5)
    assert worst > self_normalised(losses, weights) + 1e-3


def test_adversarial_gamma_is_validated(small_simulator):
    from causalrec.methods import make_recommender
    from causalrec.platform.errors import ConfigError
    from causalrec.simulators import generate_logs

    logs = generate_logs(small_simulator, n_rounds=500, seed=0)
    with pytest.raises(ConfigError, match=r"adversarial_gamma must be >= 1; got 0\.5"):
        make_recommender("ips", adversarial_gamma=0.5).fit(logs)
    with pytest.raises(ConfigError, match="exposed setting only"):
        make_recommender("ips", adversarial_gamma=2.0, feedback="implicit").fit(logs)
