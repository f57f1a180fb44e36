"""Debiasing recommenders in PyTorch.

Implemented so far: ``naive`` (:class:`NaiveMF`), ``ips`` (:class:`IPSMF`; Rel-MF in the implicit
setting), ``snips`` (:class:`SNIPSMF`), ``dr_jl`` (:class:`DRJointLearning`), ``mrdr``
(:class:`MoreRobustDR`), ``cause`` (:class:`CausE`) and ``gboost`` (:class:`GBoostRecommender`),
with :func:`make_recommender` and :func:`load_recommender`. The remaining methods of the methods
issue (DICE, the neural causal model, the adversarial and augmentation options, the two-tower
backbone) are not built yet.
"""

from causalrec.methods.base import (
    MODEL_SCHEMA_VERSION,
    Recommender,
    TorchRecommender,
    TrainingError,
)
from causalrec.methods.cause import CausE
from causalrec.methods.data import InteractionData
from causalrec.methods.doubly_robust import DRJointLearning, MoreRobustDR
from causalrec.methods.gboost import GBoostRecommender
from causalrec.methods.ips import IPSMF, SNIPSMF, NaiveMF
from causalrec.methods.registry import RECOMMENDERS, load_recommender, make_recommender

__all__ = [
    "IPSMF",
    "MODEL_SCHEMA_VERSION",
    "RECOMMENDERS",
    "SNIPSMF",
    "CausE",
    "DRJointLearning",
    "GBoostRecommender",
    "InteractionData",
    "MoreRobustDR",
    "NaiveMF",
    "Recommender",
    "TorchRecommender",
    "TrainingError",
    "load_recommender",
    "make_recommender",
]
