"""Choosing the estimator from the logs alone: off-policy cross-validation (OCV).

Which estimator is most accurate depends on the log and on the target policy: IPS wins where
the weights are tame, DM where the reward model is good, the clipped and self-normalised
estimators in between. OCV (Cief, Kveton & Kompan 2025) picks one per target policy with
cross-validation, using an unbiased estimator on held-out rounds as the validation target:

1. A *validator* V̂_val (DR by default: unbiased whatever its reward model, when the
   propensities are right) and candidates V̂_1 .. V̂_M, each a per-round :class:`EstimatorTerms`.
2. For each candidate m, a training share t_m = σ²_m / (σ²_m + σ²_val) of the rounds, from the
   delta-method variances on the whole log (the paper's "theory" ratio: the noisier estimator
   gets more data).
3. ``n_splits`` times: draw t_m · n rounds at random for training and keep the rest for
   validation; the error is (V̂_m(train) − V̂_val(validation))². Because V̂_val is unbiased and
   independent of the training rounds, the expected error is the candidate's MSE on t_m · n
   rounds plus the validator's variance on the other (1 − t_m) · n. Both sides keep at least
   2 rounds (the paper's code keeps at least 1 for training).
4. Choose the smallest mean error plus one standard error of that mean (the one-standard-error
   rule), which prefers the more stable candidate when two are within noise.

The terms of every candidate are computed once on the whole log; a split only subsets rounds,
so selection costs a few vector operations per candidate. Reward models are the log's
cross-fitted ones (each round's q̂ never saw that round), not refitted per split, and the
SLOPE-tuned estimators keep the hyperparameter chosen on the whole log.

References:
    Cief, Kveton & Kompan, "Cross-Validated Off-Policy Evaluation", AAAI 2025.
    Hastie, Tibshirani & Friedman, "The Elements of Statistical Learning", 2009 (the
    one-standard-error rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from causalrec.ope.intervals import EstimatorTerms
from causalrec.platform.errors import ConfigError, DataError

__all__ = ["AUTO", "EstimatorSelection", "OffPolicyCrossValidation"]

#: The estimator spec that asks for selection.
AUTO = "auto"


@dataclass(frozen=True)
class EstimatorSelection:
    """What :meth:`OffPolicyCrossValidation.select` chose, and why.

    Attributes:
        chosen: Name of the chosen candidate.
        table: One row per candidate: ``candidate``, ``cv_error`` (mean squared difference from
            the validator over the splits, in (clicks per round)²), ``cv_error_se`` (its standard
            error), ``cv_score`` (the two summed: what is minimised), ``train_share`` and
            ``chosen``.
        validator: Name of the validator.
        n_splits: Splits per candidate.
    """

    chosen: str
    table: pd.DataFrame
    validator: str
    n_splits: int

    @property
    def reason(self) -> str:
        """One sentence: why the chosen candidate won."""
        rows = self.table.set_index("candidate")
        best = rows.loc[self.chosen]
        others = rows.drop(index=self.chosen)
        runner_up = others["cv_score"].idxmin() if len(others) else None
        text = (
            f"{self.chosen} has the lowest cross-validated error plus one standard error "
            f"({best['cv_score']:.3g} (clicks per round)²) over {self.n_splits} splits against "
            f"{self.validator} on held-out rounds"
        )
        if runner_up is not None:
            text += f"; next: {runner_up} ({others.loc[runner_up, 'cv_score']:.3g})"
        return text


@dataclass(frozen=True)
class OffPolicyCrossValidation:
    """Off-policy cross-validation over candidate estimators (see the module docstring).

    Attributes:
        n_splits: Random train/validation splits per candidate (the paper's K = 10).
        one_standard_error: Minimise mean error + its standard error (``False``: the mean).
        seed: Seed of the splits.
    """

    n_splits: int = 10
    one_standard_error: bool = True
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be >= 2; got {self.n_splits}")

    def select(
        self,
        candidates: Mapping[str, EstimatorTerms],
        validator: EstimatorTerms,
        *,
        validator_name: str = "dr",
    ) -> EstimatorSelection:
        """Choose among ``candidates``, each the per-round terms of one estimator.

        Args:
            candidates: Terms by candidate name; every one has the validator's n units (rounds).
            validator: Terms of the unbiased validation estimator on the same units.
            validator_name: Its name, for the table and the reason.

        Returns:
            The choice, with the cross-validation table.
        """
        if not candidates:
            raise ConfigError("estimator selection needs at least one candidate")
        n = validator.n
        if n < 4:
            raise DataError(f"estimator selection needs at least 4 rounds; got {n}")
        for name, terms in candidates.items():
            if terms.n != n:
                raise DataError(f"candidate {name} has {terms.n} units; the validator has {n}")
        var_validator = validator.standard_error() ** 2
        streams = np.random.SeedSequence(self.seed).spawn(len(candidates))
        records = []
        for (name, terms), stream in zip(candidates.items(), streams, strict=True):
            var_candidate = terms.standard_error() ** 2
            total = var_candidate + var_validator
            share = var_candidate / total if total > 0 and np.isfinite(total) else 0.5
            n_train = int(np.clip(round(share * n), 2, n - 2))
            rng = np.random.default_rng(stream)
            errors = np.empty(self.n_splits)
            for split in range(self.n_splits):
                train = np.zeros(n, dtype=bool)
                train[rng.choice(n, size=n_train, replace=False)] = True
                try:
                    estimate = terms.subset(train).value()
                except DataError:  # undefined on this split (a self-normalised sum of 0 weights)
                    errors[split] = np.inf
                    continue
                errors[split] = (estimate - validator.subset(~train).value()) ** 2
            if np.isfinite(errors).all():
                mean, se = float(errors.mean()), float(errors.std(ddof=1) / np.sqrt(self.n_splits))
            else:  # a candidate undefined on some split cannot be chosen
                mean = se = np.inf
            records.append(
                {
                    "candidate": name,
                    "cv_error": mean,
                    "cv_error_se": se,
                    "cv_score": mean + se if self.one_standard_error else mean,
                    "train_share": n_train / n,
                }
            )
        table = pd.DataFrame.from_records(records)
        if not np.isfinite(table["cv_score"]).any():
            raise DataError(
                "every candidate estimator is undefined on some cross-validation split (the "
                "target policy gives no weight to any impression of the split); evaluate on more "
                "rounds or with estimators that are not self-normalised"
            )
        chosen = str(table.loc[table["cv_score"].idxmin(), "candidate"])
        table["chosen"] = table["candidate"] == chosen
        return EstimatorSelection(
            chosen=chosen, table=table, validator=validator_name, n_splits=self.n_splits
        )
