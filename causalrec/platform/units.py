"""Units of reported values, and the policy value that carries its standard error.

Every value a user sees is in **clicks per round** (per visit, per request): the expected number
of clicks one round's slate earns. The simulator's exact values, the off-policy estimates that
:func:`causalrec.ope.evaluate` reports, A/B lifts and the pipeline report all use it; estimates
and truths are compared only after :func:`check_same_unit` agreed. Open Bandit Pipeline's
array-level estimators keep their own per-impression (per-row) semantics, ``clicks_per_impression``.
"""

from __future__ import annotations

from dataclasses import dataclass

from causalrec.platform.errors import DataError

__all__ = [
    "CLICKS_PER_IMPRESSION",
    "CLICKS_PER_ROUND",
    "CLICKS_PER_SESSION",
    "LongTermValue",
    "PairedLongTermValue",
    "PolicyValue",
    "check_same_unit",
]

#: Expected clicks of one round's (visit's) whole slate: the user-facing unit.
CLICKS_PER_ROUND = "clicks_per_round"
#: Expected clicks of a whole session (an episode of steps in a dynamic world): the long-term unit.
CLICKS_PER_SESSION = "clicks_per_session"
#: Expected clicks of one impression (one row of a log): the array-level estimators' unit.
CLICKS_PER_IMPRESSION = "clicks_per_impression"


class PolicyValue(float):
    """A policy's value in clicks per round, with its standard error and whether it is exact.

    It is a ``float`` (so arithmetic, formatting and JSON work as for a number) that also says how
    it was computed: ``exact=True`` with ``standard_error == 0`` for enumerated expectations,
    ``exact=False`` with the Monte Carlo standard error otherwise.

    Example:
        >>> value = PolicyValue(0.25, standard_error=0.001, exact=False)
        >>> value + 0.25, value.exact, value.unit
        (0.5, False, 'clicks_per_round')
    """

    standard_error: float
    exact: bool
    unit: str

    def __new__(
        cls, value: float, *, standard_error: float = 0.0, exact: bool = True
    ) -> PolicyValue:
        """A value in clicks per round; ``exact`` values have ``standard_error`` 0."""
        if exact and standard_error != 0:
            raise DataError(f"an exact value has standard_error 0; got {standard_error}")
        out = super().__new__(cls, value)
        out.standard_error, out.exact = float(standard_error), bool(exact)
        out.unit = CLICKS_PER_ROUND
        return out

    def __reduce__(self):
        return (_rebuild, (float(self), self.standard_error, self.exact))

    def to_dict(self) -> dict[str, float | bool | str]:
        """``{"value", "standard_error", "exact", "unit"}`` for JSON."""
        return {
            "value": float(self),
            "standard_error": self.standard_error,
            "exact": self.exact,
            "unit": self.unit,
        }


def _rebuild(value: float, standard_error: float, exact: bool) -> PolicyValue:
    return PolicyValue(value, standard_error=standard_error, exact=exact)


class LongTermValue(float):
    """A policy's long-term value in clicks per session, estimated by rollouts.

    It is a ``float`` that also carries the rollouts' standard error, the horizon, the number of
    sessions and the seed. It is never exact: rollouts draw users, clicks and leaving.

    Example:
        >>> value = LongTermValue(1.25, standard_error=0.004, horizon=10, n_sessions=20_000)
        >>> round(value * 2, 2), value.unit, value.relative_se
        (2.5, 'clicks_per_session', 0.0032)
    """

    standard_error: float
    horizon: int
    n_sessions: int
    seed: int | None
    exact: bool = False
    unit: str = CLICKS_PER_SESSION

    def __new__(
        cls,
        value: float,
        *,
        standard_error: float,
        horizon: int,
        n_sessions: int,
        seed: int | None = None,
    ) -> LongTermValue:
        """A rollout estimate of clicks per session over ``horizon`` steps."""
        out = super().__new__(cls, value)
        out.standard_error, out.horizon = float(standard_error), int(horizon)
        out.n_sessions, out.seed = int(n_sessions), seed
        return out

    def __reduce__(self):
        return (
            _rebuild_long_term,
            (float(self), self.standard_error, self.horizon, self.n_sessions, self.seed),
        )

    @property
    def relative_se(self) -> float:
        """Standard error over the value (inf for a value of 0)."""
        return self.standard_error / abs(float(self)) if float(self) else float("inf")

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready form with the unit."""
        return {
            "value": float(self),
            "standard_error": self.standard_error,
            "horizon": self.horizon,
            "n_sessions": self.n_sessions,
            "seed": self.seed,
            "unit": self.unit,
        }


def _rebuild_long_term(value, standard_error, horizon, n_sessions, seed) -> LongTermValue:
    return LongTermValue(
        value, standard_error=standard_error, horizon=horizon, n_sessions=n_sessions, seed=seed
    )


@dataclass(frozen=True)
class PairedLongTermValue:
    """Two policies rolled out on common random numbers, and their difference.

    Attributes:
        policy: Long-term value of the policy.
        baseline: Long-term value of the baseline, on the same users and random draws.
        difference: ``policy - baseline`` in clicks per session.
        difference_se: Standard error of the paired difference (over sessions, or cohorts when
            popularity feeds back).
    """

    policy: LongTermValue
    baseline: LongTermValue
    difference: float
    difference_se: float
    unit: str = CLICKS_PER_SESSION

    def to_dict(self) -> dict:
        """JSON-ready form with the unit."""
        return {
            "policy": self.policy.to_dict(),
            "baseline": self.baseline.to_dict(),
            "difference": self.difference,
            "difference_se": self.difference_se,
            "unit": self.unit,
        }


def check_same_unit(what: str, unit: str, expected: str = CLICKS_PER_ROUND) -> None:
    """Refuse to compare quantities in different units.

    Args:
        what: The quantity being compared (named in the error).
        unit: Its unit.
        expected: The unit it is compared in.

    Raises:
        DataError: When the units differ.
    """
    if unit != expected:
        raise DataError(f"{what} is in {unit}; it can only be compared in {expected}")
