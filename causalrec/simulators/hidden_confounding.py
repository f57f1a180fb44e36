"""How far a hidden-confounding world's logged propensities are from what features can reveal.

The logger's belief includes θ_u[m:], the latent dimensions the user features x_u do not show
(``hidden_confounding``). An analyst who sees x_u can know at best e(x_u, i) = E[p(u, i) | x_u],
the logger's propensity averaged over θ_u[m:]; the log records p(u, i) itself. The marginal
sensitivity model (Tan 2006) bounds the odds ratio between the two by Γ;
:func:`true_sensitivity_gamma` computes the smallest Γ that holds in the world, which
:mod:`causalrec.ope.sensitivity`'s bounds need to cover the exact value.

References:
    Tan, "A Distributional Approach for Causal Inference Using Propensity Scores", JASA 2006.
    Owen, "Scrambling Sobol' and Niederreiter-Xing points", Journal of Complexity 1998
    (randomised quasi-Monte Carlo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from causalrec.platform.errors import ConfigError

if TYPE_CHECKING:
    from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["SensitivityGamma", "observed_feature_propensity", "true_sensitivity_gamma"]

#: Independent scramblings of the quasi-Monte Carlo draws of θ_u[m:] (their spread gives the SE).
_RQMC_REPLICATES = 8
#: Users per batch when integrating θ_u[m:] out ((replicates, batch, n_items) floats at once).
_HIDDEN_BATCH = 512


@dataclass(frozen=True)
class SensitivityGamma:
    """The smallest Γ of the marginal sensitivity model that holds in a simulated world.

    Attributes:
        gamma: max over users and items of the odds ratio, either way, between the logger's
            actual propensity and its propensity given the observed features.
        standard_error: Its standard error (0 when exact).
        exact: ``True`` only where no hidden confounding reaches the logger (Γ = 1).
        n_draws: Quasi-Monte Carlo draws of θ_u[m:] per user (0 when exact).
        user: User of the largest odds ratio (-1 when exact).
        item: Item of the largest odds ratio (-1 when exact).
    """

    gamma: float
    standard_error: float
    exact: bool
    n_draws: int
    user: int = -1
    item: int = -1


def observed_feature_propensity(
    simulator: ConfoundedRecSimulator,
    users: np.ndarray,
    *,
    n_draws: int = 4096,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The logger's propensity given the observed features, e(x_u, i) = E[p(u, i) | x_u].

    The logger's logits are a function of x_u plus the hidden part, which is linear in
    θ_u[m:]; θ_u[m:] is independent of x_u and N(0, I), so e(x_u, i) is the expectation of
    the actual propensity p(u, i) over θ_u[m:] ~ N(0, I), ε-uniform mixing included. That
    softmax expectation has no closed form: it is computed by randomised quasi-Monte Carlo
    (8 independent scramblings of a Sobol sequence, mapped to normals) as two matrix
    products per scrambling, and its standard error comes from the scramblings' spread.
    Without hidden confounding e = p, exactly (standard error 0).

    Logs record p (the logging policy's probabilities, computed from the latents), not e: e is
    what an analyst who sees only x_u could know at best.

    Args:
        simulator: The world.
        users: User ids, shape (n,).
        n_draws: Draws of θ_u[m:] per user: 8 times a power of two.
        seed: Seed of the scramblings.

    Returns:
        ``(propensity, standard_error)``, both of shape (n, n_items).

    Raises:
        ConfigError: For slates (slate_size > 1) or an ``n_draws`` not 8 times a power of two.
    """
    users = np.asarray(users)
    policy = simulator.logging_policy()
    if simulator._hidden_scale == 0:
        _check_single_item(simulator, "observed_feature_propensity")
        return policy.first_position_probabilities(users), np.zeros((len(users), simulator.n_items))
    draws = _hidden_draws(simulator, n_draws, seed)
    replicates = _hidden_expectation(simulator, users, draws)
    eps, n = policy.epsilon, simulator.n_items
    error = replicates.std(axis=0, ddof=1) / np.sqrt(len(draws))
    return (1 - eps) * replicates.mean(axis=0) + eps / n, (1 - eps) * error


def true_sensitivity_gamma(
    simulator: ConfoundedRecSimulator, *, n_draws: int = 4096, seed: int | None = 0
) -> SensitivityGamma:
    """The world's Γ: how far the logged propensities are from those given observed features.

    Γ = max over users u and items i of max(OR, 1 / OR), OR the odds of the actual
    propensity p(u, i) (what the log records as ``pscore``) over the odds of e(x_u, i)
    (:func:`observed_feature_propensity`). It is the smallest Γ of the marginal sensitivity
    model for which bounds built on e (the propensities an analyst could have) are valid.
    Rounds logged by the uniform policy (``uniform_fraction``) have OR = 1 and do not count.
    It is the Γ of the world's logging policy (a world without dynamics).

    Without hidden confounding Γ = 1, exactly. Otherwise e is a quasi-Monte Carlo estimate,
    so Γ is too (``exact=False``): its standard error is the delta-method one at the
    maximising pair; the maximum over noisy entries is biased upwards by about that much.

    Args:
        simulator: The world.
        n_draws: Draws of θ_u[m:] per user: 8 times a power of two.
        seed: Seed of the draws.

    Raises:
        ConfigError: For slates (slate_size > 1) or a bad ``n_draws``.
    """
    if simulator._hidden_scale == 0:
        return SensitivityGamma(1.0, 0.0, exact=True, n_draws=0)
    draws = _hidden_draws(simulator, n_draws, seed)
    policy = simulator.logging_policy()
    eps, n = policy.epsilon, simulator.n_items
    best = (-1.0, 0.0, -1, -1)  # |log OR|, its standard error, user, item
    for start in range(0, simulator.n_users, _HIDDEN_BATCH):
        users = np.arange(start, min(start + _HIDDEN_BATCH, simulator.n_users))
        replicates = _hidden_expectation(simulator, users, draws)
        observed = (1 - eps) * replicates.mean(axis=0) + eps / n
        error = (1 - eps) * replicates.std(axis=0, ddof=1) / np.sqrt(len(draws))
        actual = policy.first_position_probabilities(users)
        log_odds = np.abs(
            np.log(actual) - np.log1p(-actual) - np.log(observed) + np.log1p(-observed)
        )
        row, item = np.unravel_index(np.argmax(log_odds), log_odds.shape)
        if log_odds[row, item] > best[0]:
            e = observed[row, item]
            best = (log_odds[row, item], error[row, item] / (e * (1 - e)), start + row, item)
    gamma = float(np.exp(best[0]))
    return SensitivityGamma(
        gamma, gamma * float(best[1]), exact=False, n_draws=n_draws, user=int(best[2]),
        item=int(best[3]),
    )  # fmt: skip


def _check_single_item(simulator: ConfoundedRecSimulator, name: str) -> None:
    if simulator.slate_size != 1:
        raise ConfigError(
            f"{name} needs slate_size 1 (position marginals of slates are not integrated "
            f"over θ_u[m:]); got slate_size={simulator.slate_size}"
        )


def _hidden_draws(
    simulator: ConfoundedRecSimulator, n_draws: int, seed: int | None
) -> list[np.ndarray]:
    """The exp of the hidden logits at scrambled Sobol draws of θ_u[m:], per scrambling.

    Returns:
        One array of shape (n_draws / 8, n_items) per scrambling, each row shifted by its
        maximum before exp (the shift cancels in the softmax).
    """
    _check_single_item(simulator, "true_sensitivity_gamma")
    per = n_draws // _RQMC_REPLICATES
    if n_draws != per * _RQMC_REPLICATES or per < 2 or per & (per - 1):
        raise ConfigError(
            f"n_draws must be {_RQMC_REPLICATES} times a power of two >= 2 (e.g. 4096); "
            f"got {n_draws}"
        )
    columns = simulator._hidden_columns
    items = (
        simulator._hidden_scale * simulator.logging_scorer.item_factors[:, columns]
    )  # (n, d - m)
    out = []
    for child in np.random.SeedSequence(seed).spawn(_RQMC_REPLICATES):
        sobol = qmc.Sobol(items.shape[1], scramble=True, seed=np.random.default_rng(child))
        normals = ndtri(np.clip(sobol.random(per), 1e-12, 1 - 1e-12))  # (per, d - m)
        logits = normals @ items.T
        out.append(np.exp(logits - logits.max(axis=1, keepdims=True)))
    return out


def _hidden_expectation(
    simulator: ConfoundedRecSimulator, users: np.ndarray, draws: list[np.ndarray]
) -> np.ndarray:
    """E over θ_u[m:] of the logger's softmax, one estimate per scrambling.

    With a = exp(observed logits) and b = exp(hidden logits at a draw), softmax_i =
    a_i b_i / Σ_j a_j b_j, so the mean over draws is a ⊙ ((1 / (a bᵀ)) b) / n_draws.

    Returns:
        Shape (len(draws), len(users), n_items).
    """
    scorer, columns = simulator.logging_scorer, simulator._hidden_columns
    hidden = scorer.user_factors[users][:, columns] @ scorer.item_factors[:, columns].T
    observed = scorer.scores(users) - hidden  # the logits an analyst could compute
    a = np.exp(observed - observed.max(axis=1, keepdims=True))
    return np.stack([a * ((1.0 / (a @ b.T)) @ b) / len(b) for b in draws])
