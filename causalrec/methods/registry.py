"""Recommenders by name: ``make_recommender("ips", propensity="popularity")`` and model loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from causalrec.methods.base import Recommender
from causalrec.methods.causalnet import CausalNet
from causalrec.methods.cause import CausE
from causalrec.methods.dice import DICE
from causalrec.methods.doubly_robust import DRJointLearning, MoreRobustDR
from causalrec.methods.gboost import GBoostRecommender
from causalrec.methods.ips import IPSMF, SNIPSMF, NaiveMF
from causalrec.platform.validation import unknown_name_error

__all__ = ["RECOMMENDERS", "load_recommender", "make_recommender"]

#: Every registered recommender class by name.
RECOMMENDERS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        NaiveMF,
        IPSMF,
        SNIPSMF,
        DRJointLearning,
        MoreRobustDR,
        CausE,
        CausalNet,
        DICE,
        GBoostRecommender,
    )
}


def make_recommender(name: str, **params: Any) -> Recommender:
    """An unfitted recommender.

    Raises:
        UnknownNameError: For an unknown method or parameter (with the closest match).
    """
    if name not in RECOMMENDERS:
        raise unknown_name_error("method", name, RECOMMENDERS)
    cls = RECOMMENDERS[name]
    allowed = cls.param_names()
    for key in params:
        if key not in allowed:
            raise unknown_name_error(f"{name} parameter", key, allowed)
    return cls(**params)


def load_recommender(directory: str | Path) -> Recommender:
    """Load a saved model (shortcut to ``SavedModel.open(directory).load()``).

    Raises:
        LogFormatError: If the directory holds no readable saved model.
        ConfigError: If it was saved by an unreadable schema version or an unknown method.
        UnsafeModelError: If its state holds types causalrec does not load.
    """
    from causalrec.methods.artifact import SavedModel

    return SavedModel.open(directory).load()
