"""Reward models q̂(x, a, k) for the direct method and doubly robust estimators.

Three kinds, chosen by :class:`RewardModelConfig`:

* ``logistic``: logistic regression on user features x, item features z_a, their outer product
  x ⊗ z_a, one-hot item and position. Its logit is bilinear, x W z_aᵀ + x·u + z_a·v + b_a + c_k,
  so q̂ for every item is a matrix product (fast at any catalogue size).
* ``hgb``: scikit-learn's HistGradientBoostingClassifier on [x, z_a, a, k].
* ``mlp``: a small torch MLP on [x, z_a, one-hot a, one-hot k] (CPU or CUDA).

Models are cross-fitted on a log by :class:`causalrec.ope.cross_fit.CrossFittedRewardModel`: rows
are split into K folds (a slate's rows stay together) and each fold is scored by a model fitted
on the other folds, so no row is scored by a model that saw it (Chernozhukov et al. 2018).

The logistic model is fitted on one thread, so q̂ is bit-identical in every process of a machine
(a Ray worker, such as a Serve replica or a Tune trial, runs with one thread; a driver with one
per core); see :func:`_one_torch_thread`.

References:
    Chernozhukov, Chetverikov, Demirer, Duflo, Hansen, Newey, Robins, "Double/debiased machine
    learning for treatment and structural parameters", Econometrics Journal 2018.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from scipy.special import expit

from causalrec.platform.config import StrictConfig
from causalrec.platform.errors import DataError

__all__ = ["FeatureSpace", "RewardModel", "RewardModelConfig", "make_reward_model"]


class RewardModelConfig(StrictConfig):
    """Which reward model DM and DR use, and how it is cross-fitted."""

    kind: Literal["logistic", "hgb", "mlp"] = Field("logistic", description="Model family.")
    n_folds: int = Field(3, ge=2, description="Cross-fitting folds.")
    l2: float = Field(
        1.0, gt=0, description="L2 penalty (logistic: 1/C; mlp: weight decay x 1e-4)."
    )
    max_iter: int = Field(100, ge=1, description="Iterations (logistic, hgb) or epochs (mlp).")
    seed: int = Field(0, ge=0, description="Seed of the fold split and of the model.")


@dataclass(frozen=True)
class FeatureSpace:
    """What a reward model may look at.

    Attributes:
        item_features: Shape (n_items, d_item); an empty second axis when items have none.
        n_positions: Number of slate positions (K).
    """

    item_features: np.ndarray
    n_positions: int

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.item_features.shape[0]


class RewardModel(abc.ABC):
    """q̂(x, a, k) = P(reward | user features x, item a, position k)."""

    def __init__(self, space: FeatureSpace, config: RewardModelConfig):
        self.space, self.config = space, config

    @abc.abstractmethod
    def fit(self, x: np.ndarray, items: np.ndarray, positions: np.ndarray, reward: np.ndarray):
        """Fit on rows: x (n, d_user), items (n,), positions (n,), reward (n,). Returns self."""

    @abc.abstractmethod
    def predict_all(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """q̂ for every item: x (m, d_user), positions (m,) -> (m, n_items)."""

    def predict_pairs(self, x: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """q̂ at given items: shapes (m, d_user), (m,), (m,) -> (m,)."""
        return self.predict_all(x, positions)[np.arange(len(items)), items]


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch (and the BLAS inside it) on one thread, then restore the caller's thread count.

    A torch sum over more than 32,768 elements adds one partial sum per thread, and BLAS
    libraries may split a long product (the gradient's X^T G, summed over rows) between threads,
    so the low bits of the loss and gradients depend on the thread count, and L-BFGS's line search
    carries them to the 7th digit of q̂ (issue 12: a Serve replica, one thread, and the driver,
    one per core, disagreed by 7e-7). On one thread every reduction has one order.

    ``torch.set_num_threads`` sets the calling thread and the default of threads that first use
    torch meanwhile (threads already running keep theirs), hence the restore.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_binary(reward: np.ndarray) -> None:
    if not np.isin(np.unique(reward), (0.0, 1.0)).all():
        raise DataError("this reward model needs binary rewards (0/1)")


class LogisticRewardModel(RewardModel):
    """Bilinear logistic regression fitted by L-BFGS (torch, float64).

    logit q̂(x, a, k) = x W z_aᵀ + x·u + z_a·v + b_a + c_k + b_0 with standardised x and z and an
    L2 penalty ``l2 / (2 n)`` on every coefficient but b_0, i.e. scikit-learn's
    ``LogisticRegression(C=1/l2)`` on the explicit design [x ⊗ z_a, x, z_a, one-hot a, one-hot k].
    Fitting touches only the (n, d_user) and (n_items, d_item) matrices, never the n x n_items
    design, so it takes about a second on 100k rows.

    The fit runs on one torch thread, so the coefficients, hence q̂, do not depend on the
    process's thread count. Predictions need no pin: each entry sums over d_user or d_item
    terms only, and BLAS splits such products by output rows and columns, not within a sum.
    """

    def fit(self, x, items, positions, reward):
        """Fit by L-BFGS with a strong-Wolfe line search, on one thread (see the class)."""
        with _one_torch_thread():
            return self._fit(x, items, positions, reward)

    def _fit(self, x, items, positions, reward):
        import torch

        _check_binary(reward)
        self._mean = x.mean(axis=0)
        self._scale = x.std(axis=0) + 1e-8
        z = self.space.item_features
        self._z = (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-8)
        self._constant = float(reward[0]) if np.unique(reward).size < 2 else None
        if self._constant is not None:
            return self
        n, d_user, d_item = len(x), x.shape[1], self._z.shape[1]
        # Copies into torch's 64-byte-aligned memory: MKL's kernels can round differently on
        # differently aligned inputs, and numpy's alignment varies from process to process.
        X = torch.tensor((x - self._mean) / self._scale)
        Z = torch.tensor(self._z)
        item_index = torch.from_numpy(np.asarray(items, dtype=np.int64))
        position_index = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        target = torch.from_numpy(np.asarray(reward, dtype=np.float64))
        params = {
            "bilinear": torch.zeros(d_user, d_item, dtype=torch.float64),
            "user": torch.zeros(d_user, dtype=torch.float64),
            "item": torch.zeros(d_item, dtype=torch.float64),
            "item_bias": torch.zeros(self.space.n_items, dtype=torch.float64),
            "position": torch.zeros(self.space.n_positions, dtype=torch.float64),
            "intercept": torch.zeros(1, dtype=torch.float64),
        }
        for tensor in params.values():
            tensor.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            list(params.values()),
            max_iter=self.config.max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
        penalty = self.config.l2 / (2.0 * n)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        z_rows = Z[item_index]

        def closure():
            optimizer.zero_grad()
            logits = ((X @ params["bilinear"]) * z_rows).sum(dim=1)
            logits = logits + X @ params["user"] + z_rows @ params["item"]
            logits = logits + params["item_bias"][item_index] + params["position"][position_index]
            logits = logits + params["intercept"]
            loss = loss_fn(logits, target)
            loss = loss + penalty * sum(
                (p**2).sum() for name, p in params.items() if name != "intercept"
            )
            loss.backward()
            return loss

        optimizer.step(closure)
        fitted = {name: p.detach().numpy().copy() for name, p in params.items()}
        self._bilinear, self._user, self._item = fitted["bilinear"], fitted["user"], fitted["item"]
        self._item_bias, self._position = fitted["item_bias"], fitted["position"]
        self._intercept = float(fitted["intercept"][0])
        return self

    def predict_pairs(self, x, items, positions):
        """q̂ at given items, O(d_user x d_item) per row."""
        if self._constant is not None:
            return np.full(len(x), self._constant)
        x = (x - self._mean) / self._scale
        z = self._z[items]
        logits = np.einsum("nu,ui,ni->n", x, self._bilinear, z, optimize=True)
        logits += x @ self._user + z @ self._item + self._item_bias[items]
        logits += self._position[positions] + self._intercept
        return expit(logits)

    def predict_all(self, x, positions):
        """q̂ for every item via the bilinear logit (no per-item loop)."""
        if self._constant is not None:
            return np.full((len(x), self.space.n_items), self._constant)
        x = (x - self._mean) / self._scale
        z = self._z
        logits = (x @ self._bilinear) @ z.T + (z @ self._item + self._item_bias)[None, :]
        logits += (x @ self._user + self._position[positions] + self._intercept)[:, None]
        return expit(logits)


class _RowwiseRewardModel(RewardModel):
    """Models that score one (x, item, position) row at a time: predict_all expands in chunks."""

    _CHUNK = 200_000

    def _rows(self, x, items, positions) -> np.ndarray:
        return np.hstack(
            [x, self.space.item_features[items], items[:, None], positions[:, None]]
        ).astype(np.float32)

    @abc.abstractmethod
    def _predict_rows(self, rows: np.ndarray) -> np.ndarray: ...

    def predict_pairs(self, x, items, positions):
        """q̂ at given items."""
        return self._predict_rows(self._rows(x, items, positions))

    def predict_all(self, x, positions):
        """q̂ for every item, predicting (users x items) rows in chunks."""
        m, n_items = len(x), self.space.n_items
        out = np.empty((m, n_items))
        users_per_chunk = max(1, self._CHUNK // n_items)
        for start in range(0, m, users_per_chunk):
            stop = min(start + users_per_chunk, m)
            count = stop - start
            rows = self._rows(
                np.repeat(x[start:stop], n_items, axis=0),
                np.tile(np.arange(n_items), count),
                np.repeat(positions[start:stop], n_items),
            )
            out[start:stop] = self._predict_rows(rows).reshape(count, n_items)
        return out


class HistGradientBoostingRewardModel(_RowwiseRewardModel):
    """scikit-learn's HistGradientBoostingClassifier on [x, z_a, a, k]."""

    def fit(self, x, items, positions, reward):
        """Fit the boosted trees."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        _check_binary(reward)
        self._constant = float(reward[0]) if np.unique(reward).size < 2 else None
        if self._constant is None:
            self._model = HistGradientBoostingClassifier(
                max_iter=self.config.max_iter,
                l2_regularization=self.config.l2,
                random_state=self.config.seed,
            ).fit(self._rows(x, items, positions), reward)
        return self

    def _predict_rows(self, rows):
        if self._constant is not None:
            return np.full(len(rows), self._constant)
        return self._model.predict_proba(rows)[:, 1]


class MLPRewardModel(_RowwiseRewardModel):
    """A two-layer torch MLP on [x, z_a, one-hot a, one-hot k] with a logistic loss."""

    def _rows(self, x, items, positions):
        eye_items = np.eye(self.space.n_items, dtype=np.float32)
        eye_positions = np.eye(self.space.n_positions, dtype=np.float32)
        return np.hstack(
            [x, self.space.item_features[items], eye_items[items], eye_positions[positions]]
        ).astype(np.float32)

    def fit(self, x, items, positions, reward):
        """Mini-batch Adam on the logistic loss for ``max_iter`` epochs, on CUDA if available."""
        import torch

        self._mean = x.mean(axis=0)
        self._scale = x.std(axis=0) + 1e-8
        rows = self._rows((x - self._mean) / self._scale, items, positions)
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        generator = torch.Generator().manual_seed(self.config.seed)
        torch.manual_seed(self.config.seed)
        self._net = torch.nn.Sequential(
            torch.nn.Linear(rows.shape[1], 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 1),
        ).to(self._device)
        optimizer = torch.optim.Adam(
            self._net.parameters(), lr=1e-2, weight_decay=self.config.l2 * 1e-4
        )
        features = torch.from_numpy(rows).to(self._device)
        target = torch.from_numpy(reward.astype(np.float32)).to(self._device)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        batch = max(1024, len(features) // 50)  # at most ~50 steps per epoch
        for _ in range(self.config.max_iter):
            order = torch.randperm(len(features), generator=generator).to(self._device)
            for start in range(0, len(features), batch):
                index = order[start : start + batch]
                optimizer.zero_grad()
                loss = loss_fn(self._net(features[index]).squeeze(1), target[index])
                loss.backward()
                optimizer.step()
        return self

    def predict_all(self, x, positions):
        """q̂ for every item."""
        return super().predict_all((x - self._mean) / self._scale, positions)

    def predict_pairs(self, x, items, positions):
        """q̂ at given items."""
        return super().predict_pairs((x - self._mean) / self._scale, items, positions)

    def _predict_rows(self, rows):
        import torch

        with torch.no_grad():
            logits = self._net(torch.from_numpy(rows).to(self._device)).squeeze(1)
        return torch.sigmoid(logits).double().cpu().numpy()


_KINDS = {
    "logistic": LogisticRewardModel,
    "hgb": HistGradientBoostingRewardModel,
    "mlp": MLPRewardModel,
}


def make_reward_model(space: FeatureSpace, config: RewardModelConfig) -> RewardModel:
    """An unfitted reward model of ``config.kind``."""
    return _KINDS[config.kind](space, config)
