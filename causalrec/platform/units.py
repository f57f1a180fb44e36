"""Units of reported values, and the policy value that carries its standard error.

Every value a user sees is in **clicks per round** (per visit, per request): the expected number
of clicks one round's slate earns. The simulator's exact values, the off-policy estimates that
:func:`causalrec.ope.evaluate` reports, A/B lifts and the pipeline report all use it; estimates
and truths are compared only after :func:`check_same_unit` agreed. Open Bandit Pipeline's
array-level estimators keep their own per-impression (per-row) semantics, ``clicks_per_impression``.
"""

from __future__ import annotations

from causalrec.platform.errors import DataError

__all__ = [
    "CLICKS_PER_IMPRESSION",
    "CLICKS_PER_ROUND",
    "PolicyValue",
    "check_same_unit",
]

#: Expected clicks of one round's (visit's) whole slate: the user-facing unit.
CLICKS_PER_ROUND = "clicks_per_round"
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
