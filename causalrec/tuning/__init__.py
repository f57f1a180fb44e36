"""Ray Tune searches over debiasing methods, selected by an OPE estimate, with true regret.

:func:`tune_recommenders` (and ``causalrec tune``) searches a conditional space of methods and
their hyperparameters (:class:`TuningConfig`, YAML in ``configs/tuning/``) with Optuna TPE or
random search and ASHA early stopping, on the embedded local Ray or a cluster, with fractional
GPUs per trial. It selects by the DR estimate on a validation split (or, on simulated logs, by the
exact value) and reports the selection regret: how much exact value the offline selection lost
against the truly best trial.
"""

from causalrec.tuning.config import Distribution, TuningConfig
from causalrec.tuning.results import TuningResult
from causalrec.tuning.runner import split_rounds, tune_recommenders
from causalrec.tuning.space import validate_space

__all__ = [
    "Distribution",
    "TuningConfig",
    "TuningResult",
    "split_rounds",
    "tune_recommenders",
    "validate_space",
]
