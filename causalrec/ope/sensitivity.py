"""Bounds on a policy's value when the propensities may be wrong (hidden confounding).

The marginal sensitivity model (Tan 2006) lets the true propensity p*_i of impression i differ
from the propensity p_i used for the weights (logged or estimated) by at most a factor Γ >= 1 in
odds: 1/Γ <= [p*_i / (1 - p*_i)] / [p_i / (1 - p_i)] <= Γ, that is

    1/p*_i ∈ [1 + (1/p_i - 1)/Γ,  1 + Γ (1/p_i - 1)].

With w_i = π(a_i | x_i, k_i) / p_i the nominal weight, the true weight π / p*_i lies in

    [w_i (1 - (1 - p_i)(1 - 1/Γ)),  w_i (1 + (Γ - 1)(1 - p_i))].

The self-normalised estimate Σ w̃ r / Σ w̃ (SNIPS) over every weight vector in that box is a
linear-fractional program; its optimum gives the upper weights to the rewards above a threshold
and the lower weights to those below (Kallus & Zhou 2018; Zhao, Small & Bhattacharya 2019).
So the rewards are sorted once (equal rewards move together), and one prefix sum and an argmax
over the thresholds give each bound exactly: O(n log n) for a log, O(n) per bootstrap resample.
As the standard estimators do, per-impression terms are summed within rounds: the bounds are in
clicks per round, and at Γ = 1 they are :class:`~causalrec.ope.estimators.SNIPS`'s estimate.

Two kinds of bounds are reported (:class:`SensitivityBounds`):

* ``lower``, ``upper``: the sharp bounds of the SNIPS estimate on this log over every set of
  propensities the model allows at Γ (partial identification as the sample sees it; no
  sampling error).
* ``lower_bootstrap``, ``upper_bootstrap``: Zhao et al.'s percentile bootstrap, the α/2 quantile
  of the lower bound and the 1 - α/2 quantile of the upper bound over resamples of rounds. If the
  model holds at Γ they cover the policy's value with probability >= 1 - α (asymptotically).

The model constrains the propensities the weights were built from: in a hidden-confounding world
those an analyst could have are the propensities given the observed features, not the logger's
own (:meth:`~causalrec.simulators.scm.ConfoundedRecSimulator.observed_feature_propensity`).

References:
    Tan, "A Distributional Approach for Causal Inference Using Propensity Scores", JASA 2006.
    Kallus & Zhou, "Confounding-Robust Policy Improvement", NeurIPS 2018.
    Zhao, Small & Bhattacharya, "Sensitivity Analysis for Inverse Probability Weighting
    Estimators via the Percentile Bootstrap", JRSS-B 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse

from causalrec.ope._validation import check_probabilities
from causalrec.ope.estimators import SNIPS
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.ope.policy_inputs import EvaluationInputs
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.units import CLICKS_PER_ROUND

__all__ = [
    "SENSITIVITY_GAMMAS",
    "SensitivityBounds",
    "sensitivity_bounds",
    "sensitivity_curve",
    "sensitivity_curve_from_inputs",
    "snips_bounds",
]

#: The Γ of a sensitivity curve when none are given.
SENSITIVITY_GAMMAS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
#: Resampling counts held in memory at once (replicates x rounds).
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class SensitivityBounds:
    """Bounds on a policy's value at one Γ of the marginal sensitivity model.

    Attributes:
        gamma: Γ >= 1.
        estimate: The SNIPS point estimate (the bounds at Γ = 1), clicks per round.
        lower: Sharp lower bound of the SNIPS estimate on this log over the propensities the
            model allows at Γ (no sampling error), clicks per round.
        upper: The matching upper bound.
        lower_bootstrap: α/2 quantile of ``lower`` over bootstrap resamples of rounds.
        upper_bootstrap: 1 - α/2 quantile of ``upper`` over those resamples.
        alpha: 1 - confidence level of the bootstrap bounds.
        n_bootstrap: Bootstrap resamples.
        n_rounds: Rounds of the log (the resampled units).
        unit: Always ``clicks_per_round``.
    """

    gamma: float
    estimate: float
    lower: float
    upper: float
    lower_bootstrap: float
    upper_bootstrap: float
    alpha: float
    n_bootstrap: int
    n_rounds: int
    unit: str = CLICKS_PER_ROUND

    def to_dict(self) -> dict[str, float | int | str]:
        """Every field, for JSON."""
        return asdict(self)


def snips_bounds(
    reward: np.ndarray, weight: np.ndarray, pscore: np.ndarray, gamma: float
) -> tuple[float, float]:
    """Sharp ``(lower, upper)`` bounds of mean(w̃ r) / mean(w̃) with every row its own unit.

    Args:
        reward: Shape (n,), finite.
        weight: Nominal importance weights π / pscore, shape (n,), >= 0.
        pscore: The propensities the weights were built from, shape (n,), in (0, 1].
        gamma: Γ >= 1.

    Returns:
        ``(lower, upper)`` in the unit of ``reward`` per row.
    """
    gamma = _check_gamma(gamma)
    reward = np.asarray(reward, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n = len(reward)
    if reward.shape != (n,) or weight.shape != (n,) or n == 0:
        raise DataError(
            f"reward and weight must have one shape (n,); got {reward.shape}, {weight.shape}"
        )
    if not (np.isfinite(reward).all() and np.isfinite(weight).all() and (weight >= 0).all()):
        raise DataError("reward must be finite and weight finite and >= 0")
    pscore = check_probabilities("pscore", pscore, n)
    values, group = np.unique(reward, return_inverse=True)
    sums = _group_sums(weight, pscore, group, len(values), None)
    lower, upper = _bounds(values, *sums, gamma)
    return float(lower[0]), float(upper[0])


def sensitivity_bounds(
    logs: LoggedFeedback,
    policy: Policy,
    gamma: float,
    *,
    pscore: np.ndarray | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
) -> SensitivityBounds:
    """Bounds on ``policy``'s value from ``logs`` at one Γ (see the module docstring).

    Args:
        logs: Logged feedback, n_rows impressions (clicks are the reward).
        policy: The target policy.
        gamma: Γ >= 1, finite.
        pscore: Propensities the model constrains, shape (n_rows,), in (0, 1]; defaults to
            those :class:`~causalrec.ope.evaluate.OfflineEvaluator` uses (logged, else
            estimated from the user features).
        alpha: 1 - confidence level of the bootstrap bounds.
        n_bootstrap: Bootstrap resamples of rounds.
        seed: Seed of the resampling.
    """
    return sensitivity_curve(
        logs, policy, [gamma], pscore=pscore, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed
    )[0]


def sensitivity_curve(
    logs: LoggedFeedback,
    policy: Policy,
    gammas: Sequence[float] = SENSITIVITY_GAMMAS,
    *,
    pscore: np.ndarray | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
) -> tuple[SensitivityBounds, ...]:
    """:func:`sensitivity_bounds` at several Γ, on one set of bootstrap resamples.

    Args:
        logs: Logged feedback, n_rows impressions.
        policy: The target policy.
        gammas: Γ values, each >= 1 and finite, shape (n_gammas,).
        pscore: As :func:`sensitivity_bounds`, shape (n_rows,).
        alpha: 1 - confidence level of the bootstrap bounds.
        n_bootstrap: Bootstrap resamples of rounds, shared by every Γ.
        seed: Seed of the resampling.

    Returns:
        One :class:`SensitivityBounds` per Γ, in the order given.
    """
    evaluator = OfflineEvaluator(logs, [SNIPS()], reward_model=None, pscore=pscore)
    inputs, _ = evaluator.policy_inputs(policy)
    return sensitivity_curve_from_inputs(
        inputs, gammas, pscore=evaluator.pscore, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed
    )


def sensitivity_curve_from_inputs(
    inputs: EvaluationInputs,
    gammas: Sequence[float] = SENSITIVITY_GAMMAS,
    *,
    pscore: np.ndarray,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
) -> tuple[SensitivityBounds, ...]:
    """:func:`sensitivity_curve` from the inputs an :class:`OfflineEvaluator` prepared.

    Every Γ sees the same resamples, so each resample's bounds, and the bootstrap bounds, widen
    monotonically with Γ.

    Args:
        inputs: Per-impression weights and rewards of the target policy on the log.
        gammas: Γ values, shape (n_gammas,).
        pscore: The propensities ``inputs``' weights were built from, shape (n_rows,).
        alpha: 1 - confidence level of the bootstrap bounds.
        n_bootstrap: Bootstrap resamples of rounds, shared by every Γ.
        seed: Seed of the resampling (one child of ``SeedSequence(seed)`` per chunk).
    """
    gammas = [_check_gamma(g, f"gammas[{i}]") for i, g in enumerate(gammas)]
    if not gammas:
        raise ConfigError("gammas must hold at least one Γ; got none")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 2:
        raise ConfigError(f"n_bootstrap must be an integer >= 2; got {n_bootstrap!r}")
    impressions, n_rounds = inputs.impressions, inputs.n_rounds
    pscore = check_probabilities("pscore", pscore, impressions.n_rounds)
    estimate = SNIPS().policy_terms(inputs).value()  # refuses weights that are all 0
    values, group = np.unique(impressions.reward, return_inverse=True)
    per_round = impressions.n_rounds / n_rounds  # impressions per round, as SNIPS scales
    population = _group_sums(impressions.weight, pscore, group, len(values), None)
    rounds = _group_sums(impressions.weight, pscore, group, len(values), inputs.round_index)
    lows, highs = np.empty((len(gammas), n_bootstrap)), np.empty((len(gammas), n_bootstrap))
    chunk = max(1, _CHUNK_ELEMENTS // n_rounds)
    starts = range(0, n_bootstrap, chunk)
    for start, child in zip(starts, np.random.SeedSequence(seed).spawn(len(starts)), strict=True):
        rng, size = np.random.default_rng(child), min(chunk, n_bootstrap - start)
        draws = rng.integers(n_rounds, size=(size, n_rounds)) + n_rounds * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_rounds).reshape(size, n_rounds)
        sums = [np.asarray((matrix.T @ counts.T).T) for matrix in rounds]  # (size, G) each
        for row, gamma in enumerate(gammas):
            low, high = _bounds(values, *sums, gamma)
            lows[row, start : start + size], highs[row, start : start + size] = low, high
    out = []
    for row, gamma in enumerate(gammas):
        low, high = (per_round * b[0] for b in _bounds(values, *population, gamma))
        with np.errstate(all="ignore"):  # a resample with no weight has no bound: left out
            boot_low = per_round * np.nanquantile(lows[row], alpha / 2)
            boot_high = per_round * np.nanquantile(highs[row], 1 - alpha / 2)
        out.append(
            SensitivityBounds(
                gamma=gamma,
                estimate=estimate,
                # The nominal weights are in the box: only rounding can put them outside.
                lower=float(min(low, estimate)),
                upper=float(max(high, estimate)),
                lower_bootstrap=float(boot_low),
                upper_bootstrap=float(boot_high),
                alpha=float(alpha),
                n_bootstrap=n_bootstrap,
                n_rounds=n_rounds,
            )
        )
    return tuple(out)


def _check_gamma(gamma: float, name: str = "gamma") -> float:
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a finite number >= 1; got {gamma!r}") from None
    if not (math.isfinite(value) and value >= 1):
        raise ConfigError(f"{name} must be a finite number >= 1; got {gamma!r}")
    return value


def _group_sums(
    weight: np.ndarray,
    pscore: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    round_index: np.ndarray | None,
):
    """Σ w and Σ w (1 - p) per reward group: all the box of weights depends on.

    Returns:
        With ``round_index`` ``None``, two arrays of shape (1, n_groups) over the whole log;
        otherwise two sparse matrices of shape (n_rounds, n_groups), one row per round.
    """
    slack = weight * (1 - pscore)
    if round_index is None:
        return tuple(
            np.bincount(group, weights=v, minlength=n_groups)[None, :] for v in (weight, slack)
        )
    shape = (int(round_index.max()) + 1, n_groups)
    return tuple(sparse.csr_matrix((v, (round_index, group)), shape=shape) for v in (weight, slack))


def _bounds(
    values: np.ndarray, weight: np.ndarray, slack: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the self-normalised mean, per row of group sums.

    Args:
        values: Distinct rewards, ascending, shape (G,).
        weight: Σ w per group, shape (b, G).
        slack: Σ w (1 - p) per group, shape (b, G).
        gamma: Γ >= 1.

    Returns:
        ``(lower, upper)``, each of shape (b,) (NaN where every weight is 0).
    """
    high = weight + (gamma - 1.0) * slack
    low = weight - (1.0 - 1.0 / gamma) * slack
    upper = _largest(values[::-1], high[:, ::-1], low[:, ::-1])
    lower = -_largest(-values, high, low)
    return lower, upper


def _largest(values: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The max over thresholds j of Σ_{g<j} v high + Σ_{g>=j} v low over the same sums of weights.

    ``values`` (G,) are descending, so the first j groups (the largest rewards) take the upper
    weights; the j = 0..G thresholds include the optimum of the linear-fractional program.
    """
    zeros = np.zeros((len(high), 1))

    def prefix(x):  # Σ_{g<j}, shape (b, G + 1)
        return np.hstack([zeros, np.cumsum(x, axis=1)])

    def suffix(x):  # Σ_{g>=j}, shape (b, G + 1)
        return np.hstack([np.cumsum(x[:, ::-1], axis=1)[:, ::-1], zeros])

    numerator = prefix(values * high) + suffix(values * low)
    denominator = prefix(high) + suffix(low)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = numerator / denominator
    ratio[denominator <= 0] = -np.inf
    best = ratio.max(axis=1)
    best[np.isneginf(best)] = np.nan
    return best
