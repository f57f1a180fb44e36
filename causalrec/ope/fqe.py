"""Fitted Q evaluation over logged sessions: the Q model of the sequential doubly robust estimators.

For a finite horizon T, Q_t(s, a) = E[r_t + γ V_{t+1}(s_{t+1}) | s_t = s, a_t = a] with
V_{t+1}(s) = Σ_a π(a | s) Q_{t+1}(s, a) and V_T = 0 (and V = 0 once the user left). FQE fits
Q_{T−1}, ..., Q_0 backwards, each a regression of the one-step target on the logged (s_t, a_t)
(Le, Voloshin & Yue, ICML 2019; the finite-horizon form of fitted Q iteration, Ernst, Geurts &
Wehenkel, JMLR 2005).

The regression is a ridge model (scikit-learn's ``Ridge``) on features that can be evaluated for
every item at once, so V needs no loop over the catalogue:

* the bilinear block u_s ⊗ z̃_a, with u_s = [1, x_u, clicks in the window / L, mean features of
  the items clicked in the window] and z̃_a = [1, z_a] (item features, when the log has them);
* whether a was shown, and whether it was clicked, in the window (repetition and satiation);
* an unpenalised intercept; then a per-item bias: each item's mean residual shrunk towards 0
  as a random effect (method-of-moments variance), which keeps the ridge at a few hundred
  columns whatever the catalogue size.

Q̂_t is clipped to [0, K·(T − t)], the clicks still possible. The sessions are cross-fitted
(``folds``). Slates (K > 1) need a Q over slates; this model covers K = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV

from causalrec.ope.sessions import LoggedSessions
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.session import NO_ITEM, SessionContext

__all__ = ["FittedQEvaluation"]

#: Ridge penalties tried by ``alpha="cv"``.
_ALPHAS = tuple(10.0 ** np.arange(-2, 5))


@dataclass(frozen=True)
class FittedQEvaluation:
    """Finite-horizon FQE with a ridge model (see the module docstring).

    Attributes:
        alpha: Ridge penalty (scikit-learn's ``alpha``), > 0, or ``"cv"``: chosen per step among
            10^-2..10^4 by efficient leave-one-out cross-validation (``RidgeCV``).
        gamma: Discount γ in (0, 1].
        folds: Cross-fitting folds of sessions (>= 2): each session's Q̂ comes from models fit
            on the other folds, so Q̂ is independent of the session's own rewards and the doubly
            robust estimate keeps its unbiasedness (Kallus & Uehara, JMLR 2020; Chernozhukov
            et al. 2018). 1 fits and predicts on all sessions (in-sample; biased when the model
            overfits).
        seed: Seed of the fold assignment.
    """

    alpha: float | str = "cv"
    gamma: float = 1.0
    folds: int = 2
    seed: int = 0

    def __post_init__(self):
        if self.alpha != "cv" and not (isinstance(self.alpha, int | float) and self.alpha > 0):
            raise ConfigError(f"alpha must be > 0 or 'cv'; got {self.alpha!r}")
        if self.folds < 1:
            raise ConfigError(f"folds must be >= 1; got {self.folds}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1]; got {self.gamma}")

    def fit_predict(
        self,
        sessions: LoggedSessions,
        action_distribution: Callable[[SessionContext], np.ndarray],
        item_features: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit Q̂_t backwards and return Q̂ at the logged actions and V̂ under the policy.

        Args:
            sessions: The logged sessions (K = 1).
            action_distribution: π(· | s), shape (n, n_items), for a batch of contexts.
            item_features: z_a, shape (n_items, d_i), or ``None``.

        Returns:
            ``(q_factual, v_policy)``, both of shape (n_sessions, T), 0 where not logged.

        Raises:
            DataError: For slates (K > 1), or item features of the wrong shape.
        """
        if sessions.slate_size != 1:
            raise DataError(
                f"fitted Q evaluation covers single items (K = 1); the log has K = "
                f"{sessions.slate_size}: use pdis or wpdis for slates"
            )
        n_items = sessions.n_items
        if item_features is not None and np.shape(item_features)[0] != n_items:
            raise DataError(
                f"item_features must have {n_items} rows (n_items); got {np.shape(item_features)}"
            )
        z = np.ones((n_items, 1))
        if item_features is not None:
            z = np.hstack([z, np.asarray(item_features, dtype=np.float64)])
        T, n = sessions.horizon, sessions.n_sessions
        fold = np.random.default_rng(self.seed).permutation(n) % self.folds
        q_factual, v_policy = np.zeros((n, T)), np.zeros((n, T))
        # V̂_{t+1}(s_{t+1}) of each fold's model, 0 after the session ends.
        next_value = np.zeros((self.folds, n))
        for step in range(T - 1, -1, -1):
            rows = np.flatnonzero(sessions.mask[:, step])
            current = np.zeros((self.folds, n))
            if len(rows):
                context = sessions.context(step, rows)
                features = _StepFeatures.build(sessions, context, rows, z)
                dist = action_distribution(context)
                target = sessions.reward[rows, step] + self.gamma * next_value[:, rows]
                for k in range(self.folds):
                    train = fold[rows] != k if self.folds > 1 else np.ones(len(rows), bool)
                    held_out = ~train if self.folds > 1 else train
                    q_all = np.clip(self._fit(features, target[k], train), 0.0, float(T - step))
                    current[k, rows] = (dist * q_all).sum(axis=1)
                    q_factual[rows[held_out], step] = features.at_logged(q_all)[held_out]
                    v_policy[rows[held_out], step] = current[k, rows[held_out]]
            next_value = current
        return q_factual, v_policy

    def _fit(self, features: _StepFeatures, target: np.ndarray, train: np.ndarray) -> np.ndarray:
        """Fit Q̂_t on the ``train`` rows' logged actions; predict every item, shape (n, n_items)."""
        model = RidgeCV(alphas=_ALPHAS) if self.alpha == "cv" else Ridge(alpha=self.alpha)
        model.fit(features.design[train], target[train])
        residual = target[train] - model.predict(features.design[train])
        item_bias = _shrunk_item_bias(features.actions[train], residual, features.z.shape[0])
        u, z = features.u, features.z
        width = u.shape[1] * z.shape[1] - 1
        W = np.r_[model.intercept_, model.coef_[:width]].reshape(u.shape[1], z.shape[1])
        beta_shown, beta_clicked = model.coef_[width : width + 2]
        return (
            (u @ W) @ z.T
            + beta_shown * features.shown
            + beta_clicked * features.clicked
            + item_bias
        )


@dataclass(frozen=True)
class _StepFeatures:
    """The regression features of one step's logged sessions (shared by every fold).

    Attributes:
        u: State features u_s, shape (n, d_s).
        z: Item features z̃_a with the constant first, shape (n_items, d_z).
        shown: Whether each item was shown in the window, shape (n, n_items).
        clicked: Whether each item was clicked in the window, shape (n, n_items).
        actions: Logged items, shape (n,).
        design: The logged (s, a)'s regressors: u ⊗ z̃ without the constant, shown, clicked.
    """

    u: np.ndarray
    z: np.ndarray
    shown: np.ndarray
    clicked: np.ndarray
    actions: np.ndarray
    design: np.ndarray

    @classmethod
    def build(
        cls, sessions: LoggedSessions, context: SessionContext, rows: np.ndarray, z: np.ndarray
    ) -> _StepFeatures:
        u = _state_features(sessions, context, rows, z)
        shown, clicked = _history_indicators(context, sessions.n_items)
        actions = sessions.slates[rows, context.step[0], 0]
        index = np.arange(len(rows))
        # The constant (1 ⊗ 1) is the model's unpenalised intercept, not a ridge coefficient.
        bilinear = (u[:, :, None] * z[actions][:, None, :]).reshape(len(rows), -1)[:, 1:]
        design = np.hstack([bilinear, shown[index, actions, None], clicked[index, actions, None]])
        return cls(u, z, shown, clicked, actions, design)

    def at_logged(self, q_all: np.ndarray) -> np.ndarray:
        """The logged action's entry of a (n, n_items) prediction, shape (n,)."""
        return q_all[np.arange(len(self.actions)), self.actions]


def _shrunk_item_bias(items: np.ndarray, residual: np.ndarray, n_items: int) -> np.ndarray:
    """Per-item mean residual shrunk towards 0 (a random-effects estimate), shape (n_items,).

    b_i = Σ residuals of i / (n_i + k), k = σ² / τ² from the method of moments: σ² the
    residual variance, τ² the variance of the items' true offsets (the spread of the per-item
    means beyond what σ² / n_i explains). Items never shown get 0.
    """
    counts = np.bincount(items, minlength=n_items).astype(float)
    sums = np.bincount(items, weights=residual, minlength=n_items)
    shown = counts > 0
    if shown.sum() < 2:
        return np.zeros(n_items)
    sigma2 = float(residual.var())
    means = sums[shown] / counts[shown]
    tau2 = float(means.var() - np.mean(sigma2 / counts[shown]))
    if tau2 <= 0:
        return np.zeros(n_items)
    return sums / (counts + sigma2 / tau2)


def _state_features(
    sessions: LoggedSessions, context: SessionContext, rows: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """u_s = [1, x_u, clicks in the window / L, mean z of the clicked items], shape (n, d_s)."""
    clicks = context.history_clicks[:, :, 0].astype(np.float64)
    items = np.where(context.history_items[:, :, 0] == NO_ITEM, 0, context.history_items[:, :, 0])
    n_clicked = clicks.sum(axis=1, keepdims=True)
    clicked_mean = (clicks[:, :, None] * z[items][:, :, 1:]).sum(axis=1) / np.maximum(n_clicked, 1)
    return np.hstack(
        [
            np.ones((len(rows), 1)),
            sessions.user_features[rows].astype(np.float64),
            n_clicked / sessions.window,
            clicked_mean,
        ]
    )


def _history_indicators(context: SessionContext, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether each item was shown / clicked in the window, both of shape (n, n_items)."""
    n = context.n
    shown, clicked = np.zeros((n, n_items)), np.zeros((n, n_items))
    items, hits = context.history_items[:, :, 0], context.history_clicks[:, :, 0]
    row = np.repeat(np.arange(n), items.shape[1])
    valid = items.ravel() != NO_ITEM
    shown[row[valid], items.ravel()[valid]] = 1.0
    hit = valid & (hits.ravel() > 0)
    clicked[row[hit], items.ravel()[hit]] = 1.0
    return shown, clicked
