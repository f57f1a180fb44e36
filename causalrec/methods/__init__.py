"""Debiasing recommenders in PyTorch (and scikit-learn for G-computation).

Implemented so far: ``naive`` (:class:`NaiveMF`), ``ips`` (:class:`IPSMF`; Rel-MF in the implicit
setting; options ``adversarial_gamma`` and ``augment``), ``snips`` (:class:`SNIPSMF`), ``dr_jl``
(:class:`DRJointLearning`), ``mrdr`` (:class:`MoreRobustDR`), ``cause`` (:class:`CausE`),
``dice`` (:class:`DICE`), ``gboost`` (:class:`GBoostRecommender`) and ``causalnet``
(:class:`CausalNet`), with :func:`make_recommender` and :func:`load_recommender`. Backbones:
``mf`` (ID embeddings) and ``two_tower`` (MLPs over observed user and item features).
"""

from causalrec.methods.artifact import MODEL_SCHEMA_VERSION, SavedModel, is_saved_model
from causalrec.methods.base import ModelState, Recommender, TrainingError
from causalrec.methods.causalnet import CausalNet
from causalrec.methods.cause import CausE
from causalrec.methods.data import InteractionData
from causalrec.methods.dice import DICE
from causalrec.methods.doubly_robust import DRJointLearning, MoreRobustDR
from causalrec.methods.gboost import GBoostRecommender
from causalrec.methods.ips import IPSMF, SNIPSMF, NaiveMF
from causalrec.methods.registry import RECOMMENDERS, load_recommender, make_recommender
from causalrec.methods.torch_base import TorchRecommender

__all__ = [
    "DICE",
    "IPSMF",
    "MODEL_SCHEMA_VERSION",
    "RECOMMENDERS",
    "SNIPSMF",
    "CausE",
    "CausalNet",
    "DRJointLearning",
    "GBoostRecommender",
    "InteractionData",
    "ModelState",
    "MoreRobustDR",
    "NaiveMF",
    "Recommender",
    "SavedModel",
    "TorchRecommender",
    "TrainingError",
    "is_saved_model",
    "load_recommender",
    "make_recommender",
]
