"""Recommenders by name: ``make_recommender("ips", propensity="popularity")`` and model loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from causalrec.methods.base import MODEL_SCHEMA_VERSION, Recommender, TorchRecommender
from causalrec.methods.causalnet import CausalNet
from causalrec.methods.cause import CausE
from causalrec.methods.dice import DICE
from causalrec.methods.doubly_robust import DRJointLearning, MoreRobustDR
from causalrec.methods.gboost import GBoostRecommender
from causalrec.methods.ips import IPSMF, SNIPSMF, NaiveMF
from causalrec.platform.errors import ConfigError, LogFormatError
from causalrec.platform.validation import unknown_name_error

__all__ = ["RECOMMENDERS", "load_recommender", "make_recommender", "read_model_manifest"]

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


def read_model_manifest(directory: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a saved model (method, params, n_users, n_items, schema).

    Raises:
        LogFormatError: If the manifest is missing or unreadable.
        ConfigError: If it was saved by an incompatible schema version.
    """
    manifest_path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LogFormatError(f"cannot read model manifest {str(manifest_path)!r}: {exc}") from None
    version = manifest.get("schema_version")
    if version != MODEL_SCHEMA_VERSION:
        raise ConfigError(
            f"{str(manifest_path)!r} was saved with model schema version {version}; this "
            f"causalrec loads version {MODEL_SCHEMA_VERSION}"
        )
    return manifest


def load_recommender(directory: str | Path) -> Recommender:
    """Load a model saved by :meth:`TorchRecommender.save`.

    Raises:
        LogFormatError: If the manifest is missing or unreadable.
        ConfigError: If it was saved by an incompatible schema version or an unknown method.
    """
    directory = Path(directory)
    manifest = read_model_manifest(directory)
    model = make_recommender(manifest["method"], **manifest["params"])
    if isinstance(model, TorchRecommender):
        state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        model._restore(state, manifest["n_users"], manifest["n_items"])
    else:
        model._restore_directory(directory)
    return model
