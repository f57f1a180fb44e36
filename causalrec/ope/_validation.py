"""Validation of the array-level OPE inputs: done once, at the boundary, with precise messages."""

from __future__ import annotations

import numpy as np

from causalrec.platform.errors import ConfigError, DataError

__all__ = [
    "check_action_dist",
    "check_hyperparameter",
    "check_inputs",
    "check_integers",
    "check_probabilities",
    "check_reward",
]

#: Tolerance on the sum over actions of an action distribution.
SUM_TOLERANCE = 1e-6


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def check_hyperparameter(name: str, value: float, *, allow_inf: bool = True) -> float:
    """Check a non-negative estimator hyperparameter (clip, τ, λ)."""
    value = float(value)
    if np.isnan(value) or value < 0 or (not allow_inf and np.isinf(value)):
        raise ConfigError(f"{name} must be >= 0; got {value}")
    return value


def check_probabilities(name: str, values: np.ndarray, length: int | None = None) -> np.ndarray:
    """Check a vector of probabilities in (0, 1] (propensity scores)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(f"{name} must be 1-d; got shape {values.shape}")
    if length is not None and len(values) != length:
        raise DataError(f"{name} must have length {length} (as reward); got {len(values)}")
    bad = ~np.isfinite(values) | (values <= 0) | (values > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} must be in (0, 1]; got {values[row]} at row {row}")
    return values


def check_reward(reward: np.ndarray) -> np.ndarray:
    """Check a non-empty, finite reward vector of shape (n_rounds,); returns it as float64."""
    reward = np.asarray(reward, dtype=np.float64)
    if reward.ndim != 1:
        raise DataError(f"reward must be 1-d; got shape {reward.shape}")
    if len(reward) == 0:
        raise DataError("the log is empty: reward has 0 rows")
    if not np.isfinite(reward).all():
        row = int(np.flatnonzero(~np.isfinite(reward))[0])
        raise DataError(f"reward must be finite; got {reward[row]} at row {row}")
    return reward


def check_action_dist(name: str, values: np.ndarray, n: int) -> np.ndarray:
    """Check a policy's action distribution; returns it as (n, n_actions, len_list) float64.

    Args:
        name: The argument's name, for messages (``action_dist``, ``pi_b``).
        values: Shape (n, n_actions, len_list), or (n, n_actions) for len_list = 1.
        n: Number of rounds (the length of ``reward``).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[0] != n:
        raise DataError(
            f"{name} must have shape (n_rounds={n}, n_actions[, len_list]); got {values.shape}"
        )
    if not np.isfinite(values).all():
        row = _first_bad_row(~np.isfinite(values))
        raise DataError(f"{name} must be finite; got a non-finite entry at row {row}")
    if values.min() < 0:
        row = _first_bad_row(values < 0)
        raise DataError(f"{name} must be non-negative; got a negative entry at row {row}")
    sums = np.add.reduce(values, axis=1)  # (n, len_list)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row, pos = np.argwhere(off)[0]
        raise DataError(
            f"{name} must sum to 1 over actions; row {row}, position {pos} sums to "
            f"{sums[row, pos]:.6g}"
        )
    return values


def check_integers(
    name: str, values: np.ndarray, length: int, upper: int, bound: str
) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != length:
        raise DataError(f"{name} must have shape ({length},) (as reward); got {values.shape}")
    if values.dtype.kind not in "iu":
        if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values % 1 == 0):
            values = values.astype(np.int64)
        else:
            raise DataError(f"{name} must be integers; got dtype {values.dtype}")
    bad = (values < 0) | (values >= upper)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} must be in [0, {bound}={upper}); got {values[row]} at row {row}")
    return values


def check_inputs(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None,
    q_hat: np.ndarray | None,
    needs_q_hat: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate the array-level contract and return arrays in canonical form.

    Returns:
        ``(reward, action, pscore, action_dist_3d, position, q_hat_3d)`` where the 3-d arrays
        have shape (n_rounds, n_actions, len_list) (views when the input was 2-d).

    Raises:
        DataError: Naming the argument and the offending value, row or shape.
    """
    reward = check_reward(reward)
    n = len(reward)
    action_dist = check_action_dist("action_dist", action_dist, n)
    _, n_actions, len_list = action_dist.shape
    action = check_integers("action", action, n, n_actions, "n_actions")
    pscore = check_probabilities("pscore", pscore, n)
    if position is None:
        if len_list > 1:
            raise DataError(f"position is required when len_list > 1; action_dist has {len_list}")
        position = np.zeros(n, dtype=np.int64)
    else:
        position = check_integers("position", position, n, len_list, "len_list")
    if q_hat is None:
        if needs_q_hat:
            raise DataError("q_hat (estimated rewards by a reward model) is required")
    else:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if q_hat.ndim == 2:
            q_hat = q_hat[:, :, None]
        if q_hat.shape != action_dist.shape:
            raise DataError(
                f"q_hat must have the shape of action_dist {action_dist.shape}; got {q_hat.shape}"
            )
        if not np.isfinite(q_hat).all():
            row = _first_bad_row(~np.isfinite(q_hat))
            raise DataError(f"q_hat must be finite; got a non-finite entry at row {row}")
    return reward, action, pscore, action_dist, position, q_hat
