"""Online A/B statistics: lift of clicks per visit with a user-clustered delta-method interval.

Users are the randomisation unit (an arm is a hash of the user id) and a user may visit more
than once, so visits of one user are not independent. The metric is a ratio of per-user sums,
``m = Σ_u clicks_u / Σ_u visits_u``, whose variance follows from the delta method (Deng, Knoblich
& Lu, "Applying the Delta Method in Metric Analytics", KDD 2018):
``Var(m) ≈ Var(clicks_u - m · visits_u) / (n_users · mean(visits_u)²)``.
The lift ``m_b - m_a`` gets a Wald interval and a two-sided p-value; the relative lift
``m_b / m_a - 1`` a delta-method interval; the minimum detectable effect is the absolute lift a
two-sided test at level α detects with the given power at these sample sizes (Kohavi, Tang & Xu,
"Trustworthy Online Controlled Experiments", 2020, ch. 17).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from causalrec.platform.errors import DataError

__all__ = ["ArmOutcome", "LiftEstimate", "arm_outcome", "compare_arms"]


@dataclass(frozen=True)
class ArmOutcome:
    """What one arm observed.

    Attributes:
        users: Distinct users in the arm.
        visits: Visits (rounds) served.
        impressions: Items shown (visits x slate size).
        clicks: Clicks.
        ctr: Clicks per impression.
        clicks_per_visit: The experiment's metric (comparable with exact policy values).
        variance: Delta-method variance of ``clicks_per_visit``.
    """

    users: int
    visits: int
    impressions: int
    clicks: int
    ctr: float
    clicks_per_visit: float
    variance: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class LiftEstimate:
    """The online lift of arm ``b`` over arm ``a`` in clicks per visit.

    Attributes:
        lift: ``m_b - m_a``.
        low: Lower end of the ``1 - alpha`` interval of ``lift``.
        high: Upper end.
        relative_lift: ``m_b / m_a - 1``.
        relative_low: Lower end of its interval.
        relative_high: Upper end.
        p_value: Two-sided p-value of ``lift = 0``.
        mde: Minimum detectable absolute lift at ``alpha`` and ``power``.
    """

    lift: float
    low: float
    high: float
    relative_lift: float
    relative_low: float
    relative_high: float
    p_value: float
    mde: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready fields."""
        return asdict(self)


def arm_outcome(user_id: np.ndarray, clicks: np.ndarray) -> ArmOutcome:
    """Aggregate one arm's visits.

    Args:
        user_id: The user of each visit, shape (n_visits,).
        clicks: Clicks of each visit, shape (n_visits, slate_size).
    """
    user_id = np.asarray(user_id)
    clicks = np.asarray(clicks)
    if len(user_id) < 2:
        raise DataError(f"an arm needs at least 2 visits; got {len(user_id)}")
    users, index = np.unique(user_id, return_inverse=True)
    per_visit = clicks.sum(axis=1)
    user_clicks = np.bincount(index, weights=per_visit)
    user_visits = np.bincount(index).astype(np.float64)
    metric = float(per_visit.sum() / len(user_id))
    n = len(users)
    residual = user_clicks - metric * user_visits
    variance = float(residual.var(ddof=1) / (n * user_visits.mean() ** 2)) if n > 1 else np.inf
    return ArmOutcome(
        users=n,
        visits=len(user_id),
        impressions=int(clicks.size),
        clicks=int(per_visit.sum()),
        ctr=float(per_visit.sum() / clicks.size),
        clicks_per_visit=metric,
        variance=variance,
    )


def compare_arms(
    a: ArmOutcome, b: ArmOutcome, *, alpha: float = 0.05, power: float = 0.8
) -> LiftEstimate:
    """Lift of ``b`` over ``a`` with its interval, p-value and minimum detectable effect."""
    z = stats.norm.ppf(1 - alpha / 2)
    se = float(np.sqrt(a.variance + b.variance))
    lift = b.clicks_per_visit - a.clicks_per_visit
    p_value = float(2 * stats.norm.sf(abs(lift) / se)) if se > 0 else float(lift == 0)
    base = a.clicks_per_visit
    if base > 0:
        relative = b.clicks_per_visit / base - 1
        relative_se = float(
            np.sqrt(b.variance / base**2 + b.clicks_per_visit**2 * a.variance / base**4)
        )
    else:
        relative, relative_se = np.nan, np.nan
    return LiftEstimate(
        lift=float(lift),
        low=float(lift - z * se),
        high=float(lift + z * se),
        relative_lift=float(relative),
        relative_low=float(relative - z * relative_se),
        relative_high=float(relative + z * relative_se),
        p_value=p_value,
        mde=float((z + stats.norm.ppf(power)) * se),
    )
