"""Confidence intervals for estimators of the form  mean(a) + mean(b) / mean(d).

Every estimator in :mod:`causalrec.ope` reduces to three per-unit vectors: a baseline ``a`` (the
direct-method part), a correction ``b`` (the importance-weighted part) and a normaliser ``d``
(the weights for self-normalised estimators, ones otherwise). The normal interval uses the
delta method on that ratio; the bootstrap resamples units and recomputes the whole ratio, so
self-normalised estimators get their normalisation's variance too.

References:
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993.
    Hall, "Theoretical Comparison of Bootstrap Confidence Intervals", Annals of Statistics 1988.
    DiCiccio & Efron, "Bootstrap Confidence Intervals", Statistical Science 1996.
    Kleiner, Talwalkar, Sarkar, Jordan, "A Scalable Bootstrap for Massive Data", JRSS-B 2014.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from causalrec.platform.errors import ConfigError, DataError

__all__ = [
    "INTERVAL_METHODS",
    "EstimatorTerms",
    "betting_interval",
    "bootstrap_interval",
    "bootstrap_intervals",
    "confidence_interval",
    "normal_interval",
]

#: Interval methods: delta-method normal, percentile and studentized bootstrap (every estimator),
#: and the betting interval (importance-weighted sums of rewards in [0, 1]: IPS and slate IPS).
INTERVAL_METHODS = ("normal", "bootstrap", "studentized", "betting")

#: Largest n_units * n_bootstrap resampled exactly; above it the Bag of Little Bootstraps is used.
EXACT_BOOTSTRAP_ELEMENTS = 100_000_000
#: Number of subsets of the Bag of Little Bootstraps.
BLB_SUBSETS = 20
#: Fewest replicates per BLB subset: quantiles of fewer resamples are biased inwards (Kleiner
#: et al. use 100).
BLB_MIN_REPLICATES = 100
#: Resampling counts held in memory at once (replicates x units).
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class EstimatorTerms:
    """Per-unit terms: estimate = mean(baseline) + mean(correction) / mean(normalizer).

    Attributes:
        baseline: Shape (n,), or ``None`` (zero).
        correction: Shape (n,).
        normalizer: Shape (n,), or ``None`` (ones).
        weight: For importance-weighted sums of rewards in [0, 1] (IPS): the unit's total
            importance weight Σ w, shape (n,), whose expectation is at most ``rows``; what the
            betting interval needs for its upper bound. ``None`` otherwise.
        rows: Impressions per unit, shape (n,), or ``None`` (one each).
    """

    baseline: np.ndarray | None
    correction: np.ndarray
    normalizer: np.ndarray | None = None
    weight: np.ndarray | None = None
    rows: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of units."""
        return len(self.correction)

    def value(self) -> float:
        """The point estimate."""
        value = float(np.mean(self.correction))
        if self.normalizer is not None:
            value /= self._mean_normalizer()
        if self.baseline is not None:
            value += float(np.mean(self.baseline))
        return value

    def _mean_normalizer(self) -> float:
        """mean(normalizer), refused when it is 0 (the ratio is then undefined)."""
        mean = float(np.mean(self.normalizer))
        if mean == 0:
            raise DataError(
                "the target policy gives no weight to any logged impression (every importance "
                "weight is 0): a self-normalised estimate is undefined; leave this estimator out "
                "or evaluate on logs that the target policy supports"
            )
        return mean

    def contributions(self) -> np.ndarray:
        """Per-unit contributions whose mean is the estimate, shape (n,)."""
        out = self.correction.astype(np.float64, copy=True)
        if self.normalizer is not None:
            out /= self._mean_normalizer()
        if self.baseline is not None:
            out += self.baseline
        return out

    def summed_by(self, groups: np.ndarray, n_groups: int) -> EstimatorTerms:
        """The same estimator over groups of units (rounds of a slate log), per group.

        Baseline and correction are summed within each group; the normaliser is summed and
        scaled by ``n_groups / n``, so its mean over groups is still the mean per unit. The
        estimate becomes the expected total per group — for impressions grouped by round, clicks
        per round — and intervals treat groups as the independent units (clustered).

        Args:
            groups: Group index of each unit, shape (n,), values in [0, n_groups).
            n_groups: Number of groups.
        """

        def total(values: np.ndarray | None) -> np.ndarray | None:
            if values is None:
                return None
            return np.bincount(groups, weights=values, minlength=n_groups)

        normalizer = total(self.normalizer)
        if normalizer is not None:
            normalizer *= n_groups / self.n
        rows = self.rows if self.rows is not None else np.ones(self.n)
        return EstimatorTerms(
            baseline=total(self.baseline),
            correction=total(self.correction),
            normalizer=normalizer,
            weight=total(self.weight),
            rows=total(rows) if self.weight is not None else None,
        )

    def subset(self, units: np.ndarray) -> EstimatorTerms:
        """The same estimator on a subset of the units (an index or a boolean mask)."""

        def take(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[units]

        return EstimatorTerms(
            baseline=take(self.baseline),
            correction=self.correction[units],
            normalizer=take(self.normalizer),
            weight=take(self.weight),
            rows=take(self.rows),
        )

    def standard_error(self) -> float:
        """Delta-method standard error of :meth:`value` (``inf`` with one unit)."""
        if self.n < 2:
            return np.inf
        return float(np.std(self.influence(), ddof=1)) / np.sqrt(self.n)

    def influence(self) -> np.ndarray:
        """Influence-function values (delta method) whose variance / n is the estimate's."""
        if self.normalizer is None:
            return self.contributions()
        mean_d = self._mean_normalizer()
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
    se = terms.standard_error()
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


def _replicate_values_and_errors(
    terms: EstimatorTerms, counts: np.ndarray, data: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and delta-method standard errors of bootstrap replicates.

    Args:
        terms: The estimator (which columns ``data`` holds).
        counts: Resampling multiplicities, shape (replicates, m_rows), each row summing to ``n``.
        data: The per-unit columns of those rows, shape (m_rows, m).
        n: Size of each resample.

    Returns:
        ``(values, standard_errors)``, both of shape (replicates,).
    """
    m = data.shape[1]
    means = counts @ data / n  # (B, m)
    outer = (data[:, :, None] * data[:, None, :]).reshape(len(data), m * m)
    second = (counts @ outer).reshape(len(counts), m, m) / n  # (B, m, m)
    values = _ratio(terms, means)
    # The influence function is a linear combination β·x of the columns with replicate-specific
    # coefficients (see EstimatorTerms.influence); its resampled variance is βᵀ Σ* β.
    beta = np.ones_like(means)
    if terms.normalizer is not None:
        beta[:, 0] = 1.0 / means[:, 1]
        beta[:, 1] = -means[:, 0] / means[:, 1] ** 2
    covariance = second - means[:, :, None] * means[:, None, :]
    variance = np.einsum("bi,bij,bj->b", beta, covariance, beta)
    return values, np.sqrt(np.maximum(variance, 0.0) / n)


def bootstrap_interval(
    terms: EstimatorTerms,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = None,
    *,
    studentized: bool = False,
) -> tuple[float, float]:
    """Bootstrap interval, resampling units with replacement: percentile or studentized.

    The percentile interval takes the quantiles of the resampled estimates. The studentized
    (bootstrap-t) interval resamples t = (θ* − θ̂) / se* with each replicate's own delta-method
    standard error and returns [θ̂ − t_{1−α/2} se, θ̂ − t_{α/2} se]: it corrects for the skew of
    heavy-tailed importance weights, where the normal and percentile intervals under-cover
    (Hall 1988; DiCiccio & Efron 1996).

    When ``n * n_bootstrap`` exceeds :data:`EXACT_BOOTSTRAP_ELEMENTS` the Bag of Little
    Bootstraps is used instead (Kleiner, Talwalkar, Sarkar, Jordan, JRSS-B 2014):
    ``BLB_SUBSETS`` subsets of size ``ceil(n ** 0.7)``, each resampled to full size ``n`` with
    multinomial weights ``max(BLB_MIN_REPLICATES, n_bootstrap / BLB_SUBSETS)`` times. Each
    subset gives the quantiles of its replicates' deviations from the subset's own estimate (or
    of their t statistics); the quantiles are averaged over subsets and the interval is centred
    on the full-sample estimate, as Kleiner et al. intend. It has the same asymptotics at a cost
    independent of ``n``.

    Args:
        terms: The estimator's per-unit terms.
        alpha: 1 - confidence level.
        n_bootstrap: Number of replicates (in total over subsets for the BLB).
        seed: Seed of the resampling.
        studentized: Bootstrap-t instead of percentile.
    """
    intervals = bootstrap_intervals([terms], alpha, n_bootstrap, seed)
    return intervals["studentized" if studentized else "bootstrap"][0]


def bootstrap_intervals(
    terms: Sequence[EstimatorTerms],
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """Percentile and studentized bootstrap intervals of several estimators on one resampling.

    Every estimator sees the same resampled units (as :func:`bootstrap_interval` describes), so
    a table of estimators costs one resampling, and differences between them are paired.

    Args:
        terms: Per-unit terms of each estimator, all over the same ``n`` units.
        alpha: 1 - confidence level.
        n_bootstrap: Number of replicates (in total over subsets for the BLB).
        seed: Seed of the resampling.

    Returns:
        ``{"bootstrap": [(low, high), ...], "studentized": [(low, high), ...]}``, one interval
        per estimator in the order given.
    """
    _check_alpha(alpha)
    if n_bootstrap < 2:
        raise ConfigError(f"n_bootstrap must be >= 2; got {n_bootstrap}")
    n = terms[0].n
    if any(t.n != n for t in terms):
        raise ConfigError(f"every estimator must have the same units; got {[t.n for t in terms]}")
    datas = [_columns(t) for t in terms]
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    quantiles = [alpha / 2, 1 - alpha / 2]
    estimates = [t.value() for t in terms]
    errors_full = [t.standard_error() for t in terms]
    percentile, student = [], []
    if n * n_bootstrap <= EXACT_BOOTSTRAP_ELEMENTS:
        values = np.empty((len(terms), n_bootstrap))
        errors = np.empty((len(terms), n_bootstrap))
        chunk = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, n_bootstrap, chunk):
            stop = min(start + chunk, n_bootstrap)
            counts = np.stack(
                [np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(start, stop)]
            ).astype(np.float64)
            for index, (t, data) in enumerate(zip(terms, datas, strict=True)):
                values[index, start:stop], errors[index, start:stop] = _replicate_values_and_errors(
                    t, counts, data, n
                )
        for index, (estimate, se) in enumerate(zip(estimates, errors_full, strict=True)):
            low, high = np.quantile(values[index], quantiles)
            percentile.append((float(low), float(high)))
            t_low, t_high = _t_quantiles(values[index] - estimate, errors[index], quantiles)
            student.append((float(estimate - t_high * se), float(estimate - t_low * se)))
        return {"bootstrap": percentile, "studentized": student}
    subset_size = int(np.ceil(n**0.7))
    per_subset = max(BLB_MIN_REPLICATES, -(-n_bootstrap // BLB_SUBSETS))
    deviations = np.empty((len(terms), BLB_SUBSETS, 2))
    t_bounds = np.empty((len(terms), BLB_SUBSETS, 2))
    for subset in range(BLB_SUBSETS):
        rows = rng.choice(n, size=subset_size, replace=False)
        counts = rng.multinomial(n, np.full(subset_size, 1.0 / subset_size), size=per_subset)
        counts = counts.astype(np.float64)
        for index, (t, data) in enumerate(zip(terms, datas, strict=True)):
            values, errors = _replicate_values_and_errors(t, counts, data[rows], n)
            subset_estimate = float(_ratio(t, data[rows].mean(axis=0)[None, :])[0])
            deviations[index, subset] = np.quantile(values - subset_estimate, quantiles)
            t_bounds[index, subset] = _t_quantiles(values - subset_estimate, errors, quantiles)
    for index, (estimate, se) in enumerate(zip(estimates, errors_full, strict=True)):
        low, high = deviations[index].mean(axis=0)
        percentile.append((float(estimate + low), float(estimate + high)))
        t_low, t_high = t_bounds[index].mean(axis=0)
        student.append((float(estimate - t_high * se), float(estimate - t_low * se)))
    return {"bootstrap": percentile, "studentized": student}


def _t_quantiles(
    deviations: np.ndarray, errors: np.ndarray, quantiles: list[float]
) -> tuple[float, float]:
    """Quantiles of the bootstrap t statistics (replicates with a zero error are dropped)."""
    usable = errors > 0
    if not usable.any():
        return 0.0, 0.0
    low, high = np.quantile(deviations[usable] / errors[usable], quantiles)
    return float(low), float(high)


def confidence_interval(
    terms: EstimatorTerms,
    method: str = "normal",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int | None = None,
) -> tuple[float, float]:
    """``(low, high)`` by ``method``: one of :data:`INTERVAL_METHODS`."""
    if method == "normal":
        return normal_interval(terms, alpha)
    if method in ("bootstrap", "studentized"):
        return bootstrap_interval(
            terms, alpha, n_bootstrap, seed, studentized=method == "studentized"
        )
    if method == "betting":
        return betting_interval(terms, alpha, seed)
    raise ConfigError(f"interval must be one of {list(INTERVAL_METHODS)}; got {method!r}")


def _betting_lower_bound(x: np.ndarray, alpha: float) -> float:
    """Lower confidence bound on the mean of non-negative x by betting (one-sided, level α).

    The capital K(m) = Π_i (1 + λ_i (x_i − m)) is a non-negative martingale under mean m, with
    predictable bets λ_i = min(sqrt(2 log(1/α) / (n σ̂²_{i−1})), 3 / (4m)) from the running
    variance (WSR's predictable plug-in); no upper bound on x is needed since λ_i m < 1. By Ville's
    inequality P(K_n(μ) >= 1/α) <= α, so the bound is inf{m : K_n(m) < 1/α}, found by bisection
    (K_n decreases in m).
    """
    n = len(x)
    if n == 0 or not np.any(x > 0):
        return 0.0
    index = np.arange(1, n + 1)
    running_mean = (0.5 + np.concatenate([[0.0], np.cumsum(x)[:-1]])) / index
    centred = (x - running_mean) ** 2
    variance = (0.25 + np.concatenate([[0.0], np.cumsum(centred)[:-1]])) / index
    base_bet = np.sqrt(2 * np.log(1 / alpha) / (n * variance))
    threshold = np.log(1 / alpha)

    def log_capital(m: float) -> float:
        bet = np.minimum(base_bet, 0.75 / m)
        return float(np.log1p(bet * (x - m)).sum())

    low, high = 0.0, float(np.mean(x))
    if log_capital(max(high, np.finfo(float).tiny)) >= threshold:
        return high
    for _ in range(60):
        middle = (low + high) / 2
        if middle <= 0:
            break
        if log_capital(middle) >= threshold:
            low = middle
        else:
            high = middle
    return low


def betting_interval(
    terms: EstimatorTerms, alpha: float = 0.05, seed: int | None = None
) -> tuple[float, float]:
    """Betting confidence interval for importance-weighted sums of rewards in [0, 1].

    For IPS-type terms X_u = Σ_k w_k r_k ≥ 0 (per unit u, rewards in [0, 1]), the lower bound
    is a betting lower bound on E[X]; the upper bound applies the same to
    Y_u = Σ_k w_k (1 − r_k) ≥ 0, whose mean is E[Σ_k w_k] − E[X] <= rows − E[X] (the weights of
    each impression have mean at most 1), so E[X] <= mean(rows) − LB(Y). Each side has level
    α/2. Valid at every n with no normal approximation, which the heavy right tail of importance
    weights breaks; conservative where the target has unsupported mass (E[w] < 1). Units are
    bet on in a seeded random order.

    References:
        Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting",
        JRSS-B 2024.
        Waudby-Smith, Wu, Ramdas, Karampatziakis, Mineiro, "Anytime-valid off-policy inference
        for contextual bandits", ACM/IMS Journal of Data Science 2024.

    Raises:
        ConfigError: For estimators that are not importance-weighted sums of rewards (DR,
            SNIPS, DM ...).
    """
    _check_alpha(alpha)
    if terms.weight is None or terms.baseline is not None or terms.normalizer is not None:
        raise ConfigError(
            "interval: 'betting' needs an importance-weighted sum of rewards in [0, 1] "
            "(ips, iips, rips, sips); use normal, bootstrap or studentized for this estimator"
        )
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(terms.n)
    x = terms.correction[order]
    y = terms.weight[order] - x
    rows = float(np.mean(terms.rows)) if terms.rows is not None else 1.0
    if (x < -1e-12).any() or (y < -1e-12).any():
        raise DataError("interval: 'betting' needs rewards in [0, 1] and weights >= 0")
    low = _betting_lower_bound(np.maximum(x, 0.0), alpha / 2)
    high = rows - _betting_lower_bound(np.maximum(y, 0.0), alpha / 2)
    return float(low), float(high)
