"""Confidence intervals for estimators of the form  mean(a) + mean(b) / mean(d).

Every estimator in :mod:`causalrec.ope` reduces to three per-unit vectors: a baseline ``a`` (the
direct-method part), a correction ``b`` (the importance-weighted part) and a normaliser ``d``
(the weights for self-normalised estimators, ones otherwise). The normal interval uses the
delta method on that ratio; the bootstrap resamples units and recomputes the whole ratio, so
self-normalised estimators get their normalisation's variance too.

References:
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from causalrec.platform.errors import ConfigError

__all__ = ["EstimatorTerms", "bootstrap_interval", "normal_interval"]

#: Largest n_units * n_bootstrap resampled exactly; above it the Bag of Little Bootstraps is used.
EXACT_BOOTSTRAP_ELEMENTS = 100_000_000
#: Number of subsets of the Bag of Little Bootstraps.
BLB_SUBSETS = 20


@dataclass(frozen=True)
class EstimatorTerms:
    """Per-unit terms: estimate = mean(baseline) + mean(correction) / mean(normalizer).

    Attributes:
        baseline: Shape (n,), or ``None`` (zero).
        correction: Shape (n,).
        normalizer: Shape (n,), or ``None`` (ones).
    """

    baseline: np.ndarray | None
    correction: np.ndarray
    normalizer: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of units."""
        return len(self.correction)

    def value(self) -> float:
        """The point estimate."""
        value = float(np.mean(self.correction))
        if self.normalizer is not None:
            value /= float(np.mean(self.normalizer))
        if self.baseline is not None:
            value += float(np.mean(self.baseline))
        return value

    def contributions(self) -> np.ndarray:
        """Per-unit contributions whose mean is the estimate, shape (n,)."""
        out = self.correction.astype(np.float64, copy=True)
        if self.normalizer is not None:
            out /= float(np.mean(self.normalizer))
        if self.baseline is not None:
            out += self.baseline
        return out

    def influence(self) -> np.ndarray:
        """Influence-function values (delta method) whose variance / n is the estimate's."""
        if self.normalizer is None:
            return self.contributions()
        mean_d = float(np.mean(self.normalizer))
        ratio = float(np.mean(self.correction)) / mean_d
        out = (self.correction - ratio * self.normalizer) / mean_d
        if self.baseline is not None:
            out = out + self.baseline
        return out


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha}")


def normal_interval(terms: EstimatorTerms, alpha: float = 0.05) -> tuple[float, float]:
    """Normal (Wald) interval with a delta-method standard error."""
    _check_alpha(alpha)
    influence = terms.influence()
    se = float(np.std(influence, ddof=1)) / np.sqrt(terms.n) if terms.n > 1 else np.inf
    z = stats.norm.ppf(1 - alpha / 2)
    value = terms.value()
    return float(value - z * se), float(value + z * se)


def _columns(terms: EstimatorTerms) -> np.ndarray:
    columns = [terms.correction]
    if terms.normalizer is not None:
        columns.append(terms.normalizer)
    if terms.baseline is not None:
        columns.append(terms.baseline)
    return np.stack(columns, axis=1).astype(np.float64)  # (n, m)


def _ratio(terms: EstimatorTerms, means: np.ndarray) -> np.ndarray:
    """Estimator values from resampled column means, shape (replicates, m) -> (replicates,)."""
    values = means[:, 0].copy()
    column = 1
    if terms.normalizer is not None:
        values /= means[:, column]
        column += 1
    if terms.baseline is not None:
        values += means[:, column]
    return values


def bootstrap_interval(
    terms: EstimatorTerms,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval, resampling units with replacement.

    When ``n * n_bootstrap`` exceeds :data:`EXACT_BOOTSTRAP_ELEMENTS` the Bag of Little
    Bootstraps is used instead (Kleiner, Talwalkar, Sarkar, Jordan, JRSS-B 2014):
    ``BLB_SUBSETS`` subsets of size ``ceil(n ** 0.7)``, each resampled to full size ``n`` with
    multinomial weights ``n_bootstrap / BLB_SUBSETS`` times, and the per-subset percentile
    bounds averaged. It has the same asymptotics at a cost independent of ``n``.

    Args:
        terms: The estimator's per-unit terms.
        alpha: 1 - confidence level.
        n_bootstrap: Number of replicates (in total over subsets for the BLB).
        seed: Seed of the resampling.
    """
    _check_alpha(alpha)
    if n_bootstrap < 2:
        raise ConfigError(f"n_bootstrap must be >= 2; got {n_bootstrap}")
    data = _columns(terms)
    n = terms.n
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    quantiles = [alpha / 2, 1 - alpha / 2]
    if n * n_bootstrap <= EXACT_BOOTSTRAP_ELEMENTS:
        means = np.empty((n_bootstrap, data.shape[1]))
        for replicate in range(n_bootstrap):
            counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
            means[replicate] = counts @ data / n
        low, high = np.quantile(_ratio(terms, means), quantiles)
        return float(low), float(high)
    subset_size = int(np.ceil(n**0.7))
    per_subset = max(2, -(-n_bootstrap // BLB_SUBSETS))
    bounds = np.empty((BLB_SUBSETS, 2))
    for subset in range(BLB_SUBSETS):
        rows = rng.choice(n, size=subset_size, replace=False)
        counts = rng.multinomial(n, np.full(subset_size, 1.0 / subset_size), size=per_subset)
        means = counts @ data[rows] / n
        bounds[subset] = np.quantile(_ratio(terms, means), quantiles)
    low, high = bounds.mean(axis=0)
    return float(low), float(high)
