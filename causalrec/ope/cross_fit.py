"""Reward models cross-fitted on a log: folds of whole rounds, one model per fold.

Rows are split into ``n_folds`` folds (a slate's rows stay together) and each fold is scored by
a model fitted on the other folds, so no row is scored by a model that saw it. The fitted models
depend on the log only, so :class:`~causalrec.ope.OfflineEvaluator` fits them once and
evaluates many policies with them.

References:
    Chernozhukov, Chetverikov, Demirer, Duflo, Hansen, Newey, Robins, "Double/debiased machine
    learning for treatment and structural parameters", Econometrics Journal 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.ope.reward_model import (
    FeatureSpace,
    RewardModel,
    RewardModelConfig,
    make_reward_model,
)
from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback

__all__ = [
    "CrossFittedRewardModel",
    "coerce_reward_model",
    "feature_space",
    "feature_space_of",
    "fold_ids",
]


def coerce_reward_model(
    reward_model: str | RewardModelConfig | dict | None,
) -> RewardModelConfig | None:
    """The ``reward_model`` argument of :func:`~causalrec.ope.evaluate` as a configuration.

    Args:
        reward_model: A kind (``"logistic"``), a :class:`RewardModelConfig`, its fields as a
            dict, or ``None`` (no reward model).
    """
    if reward_model is None or isinstance(reward_model, RewardModelConfig):
        return reward_model
    if isinstance(reward_model, str):
        return RewardModelConfig(kind=reward_model)
    if isinstance(reward_model, dict):
        return RewardModelConfig.from_dict(reward_model, source="reward_model")
    raise DataError(
        f"reward_model must be a kind, a RewardModelConfig or None; got {reward_model!r}"
    )


def feature_space(logs: LoggedFeedback) -> FeatureSpace:
    """What a reward model fitted on ``logs`` may look at: its item features and positions."""
    return feature_space_of(logs.item_table, logs.n_items, logs.slate_size)


def feature_space_of(item_table: np.ndarray | None, n_items: int, slate_size: int) -> FeatureSpace:
    """A reward model's feature space: item features (shape (n_items, d), or none) and positions."""
    items = np.zeros((n_items, 0)) if item_table is None else item_table
    return FeatureSpace(item_features=np.asarray(items, dtype=np.float64), n_positions=slate_size)


def fold_ids(round_id: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each row, shape (n,): rounds (slates) are assigned whole, at random.

    Args:
        round_id: Round of each row, shape (n,).
        n_folds: Number of folds.
        seed: Seed of the assignment.
    """
    rounds, inverse = np.unique(round_id, return_inverse=True)
    if len(rounds) < n_folds:
        raise DataError(f"cross-fitting needs at least n_folds={n_folds} rounds; got {len(rounds)}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    assignment = rng.permutation(len(rounds)) % n_folds
    return assignment[inverse]


@dataclass(frozen=True)
class CrossFittedRewardModel:
    """Reward models fitted once on a log, fold by fold, so each row is predicted out of fold.

    Attributes:
        folds: Fold of each row of the log, shape (n_rows,).
        models: One fitted model per fold, trained on the other folds' rows.
        features: Reward-model features of each row, shape (n_rows, d_user), float64.
        q_factual: Out-of-fold prediction for each row's logged item, shape (n_rows,) — it does
            not depend on the evaluated policy, so it is computed once here.
    """

    folds: np.ndarray
    models: tuple[RewardModel, ...]
    features: np.ndarray
    q_factual: np.ndarray

    @classmethod
    def fit(cls, logs: LoggedFeedback, config: RewardModelConfig) -> CrossFittedRewardModel:
        """Fit ``config.n_folds`` models on ``logs`` (Chernozhukov et al. 2018 cross-fitting)."""
        x = logs.user_features.astype(np.float64)
        folds = fold_ids(logs.round_id, config.n_folds, config.seed)
        space = feature_space(logs)
        reward = logs.click.astype(np.float64)
        models, q_factual = [], np.empty(logs.n_rows)
        for fold in range(config.n_folds):
            train = folds != fold
            model = make_reward_model(space, config).fit(
                x[train], logs.item_id[train], logs.position[train], reward[train]
            )
            held_out = ~train
            q_factual[held_out] = model.predict_pairs(
                x[held_out], logs.item_id[held_out], logs.position[held_out]
            )
            models.append(model)
        return cls(folds=folds, models=tuple(models), features=x, q_factual=q_factual)

    @classmethod
    def from_model(cls, logs: LoggedFeedback, model: RewardModel) -> CrossFittedRewardModel:
        """One model fitted elsewhere predicts every row of ``logs`` (a single fold).

        For logs too large to cross-fit in memory: :mod:`causalrec.ope.sharded` fits the model
        on a sample of rounds and scores every shard with it.
        """
        x = logs.user_features.astype(np.float64)
        return cls(
            folds=np.zeros(logs.n_rows, dtype=np.int64),
            models=(model,),
            features=x,
            q_factual=model.predict_pairs(x, logs.item_id, logs.position),
        )
