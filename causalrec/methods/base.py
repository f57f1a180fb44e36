"""The recommender contract (the torch training loop is in :mod:`causalrec.methods.torch_base`).

scikit-learn's estimator contract: ``__init__`` only stores parameters; :meth:`Recommender.fit`
does the work and returns ``self``; fitted state ends in ``_``. Every recommender scores items
(:meth:`score`), turns into a policy of the platform's policy protocol (:meth:`policy`) and
hands its fitted state to the saved-model artifact as a :class:`ModelState`
(:mod:`causalrec.methods.artifact` owns the directory layout; :meth:`Recommender.save` is a
shortcut to :meth:`~causalrec.methods.artifact.SavedModel.write`).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from causalrec.platform.errors import CausalRecError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Exploration, ExplorationKind, Policy, make_policy
from causalrec.platform.session import PolicyOnSessions, SessionPolicy
from causalrec.platform.validation import unknown_name_error

__all__ = ["ModelScorer", "ModelState", "Recommender", "TrainingError"]


@dataclass(frozen=True)
class ModelState:
    """What a fitted recommender persists: arrays and scikit-learn estimators, no code.

    Attributes:
        arrays: Named arrays (torch weights and buffers as numpy, feature tables), saved as
            safetensors.
        estimators: Named scikit-learn estimators, saved with skops.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    estimators: dict[str, Any] = field(default_factory=dict)


class TrainingError(CausalRecError, RuntimeError):
    """Training failed (e.g. a non-finite loss); no model was saved."""


@dataclass(frozen=True)
class ModelScorer:
    """Adapter from a fitted recommender to the policy protocol's ``UserItemScorer``.

    Its scores are the model's predicted click probabilities, shape (n, n_items).
    """

    model: Recommender

    @property
    def n_users(self) -> int:
        """Users the model was fitted on."""
        return self.model.n_users_

    @property
    def n_items(self) -> int:
        """Items the model was fitted on."""
        return self.model.n_items_

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Predicted click probabilities, shape (len(users), n_items)."""
        return self.model.score(users)


class Recommender(abc.ABC):
    """Base of every recommender in causalrec.

    Attributes:
        name: Registry name (``"naive"``, ``"ips"``, ...).
        supported_feedback: The feedback settings the method supports.
    """

    name: ClassVar[str]
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed", "implicit")

    # -- parameters (scikit-learn style) ------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor parameters, in signature order (scikit-learn style).

        Raises:
            TypeError: If the constructor takes ``*args`` or ``**kwargs``: every parameter must
                be explicit for :meth:`get_params` and ``sklearn.base.clone``.
        """
        if cls.__init__ is object.__init__:
            return []
        parameters = [
            p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"
        ]
        variadic = [p.name for p in parameters if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if variadic:
            raise TypeError(
                f"{cls.__name__}.__init__ must list its parameters explicitly (scikit-learn's "
                f"estimator contract); it takes variadic {variadic}"
            )
        return [p.name for p in parameters]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters and their values (scikit-learn's ``get_params``).

        Args:
            deep: Also list the parameters of parameter values that have ``get_params``
                themselves (estimators), as ``<name>__<parameter>``.
        """
        params: dict[str, Any] = {}
        for name in self.param_names():
            value = getattr(self, name)
            params[name] = value
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update((f"{name}__{key}", v) for key, v in value.get_params().items())
        return params

    def set_params(self, **params: Any) -> Recommender:
        """Set constructor parameters (scikit-learn's ``set_params``); returns ``self``.

        ``<name>__<parameter>`` sets a parameter of a parameter value that is an estimator.

        Raises:
            UnknownNameError: For a name that is not a constructor parameter (with the closest
                match); nothing is set then.
        """
        allowed = self.param_names()
        for key in params:
            if key.partition("__")[0] not in allowed:
                raise unknown_name_error(f"{self.name} parameter", key, allowed)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, delimiter, sub_key = key.partition("__")
            if delimiter:
                nested.setdefault(name, {})[sub_key] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params(deep=False).items())
        return f"{type(self).__name__}({params})"

    # -- contract -----------------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, logs: LoggedFeedback, *, validation: LoggedFeedback | None = None):
        """Fit on ``logs``; returns ``self``.

        Args:
            logs: Training log.
            validation: Optional held-out log; its naive logistic loss on the exposed pairs is
                recorded after every epoch in ``validation_history_`` (torch models) or once in
                ``validation_loss_`` (others).
        """

    def fit_epochs(
        self,
        logs: LoggedFeedback,
        *,
        validation: LoggedFeedback | None = None,
        state: dict | None = None,
    ) -> Iterator[int]:
        """Fit epoch by epoch, yielding the number of epochs done after each one.

        After every yield the model is usable (:meth:`score`, :meth:`policy`, :meth:`save`) and
        :meth:`training_state` returns what :meth:`fit_epochs` needs to resume from there, so a
        tuner can report, checkpoint and stop between epochs. Models without epochs (e.g.
        gradient boosting) fit in one step and yield once; they ignore ``state``.

        Args:
            logs: Training log.
            validation: Optional held-out log (see :meth:`fit`).
            state: A :meth:`training_state` of an earlier run on the same log and parameters.
        """
        self.fit(logs, validation=validation)
        yield 1

    def training_state(self) -> dict | None:
        """A resumable snapshot of training (``None`` for models trained in one step)."""
        return None

    @abc.abstractmethod
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Predicted relevance of ``items`` (default: all) for ``users``: (n_users, n_items)."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise CausalRecError(f"{type(self).__name__} is not fitted: call fit() first")

    def policy(
        self,
        k: int = 1,
        exploration: Exploration | ExplorationKind = "none",
        *,
        epsilon: float = 0.1,
        temperature: float = 1.0,
    ) -> Policy:
        """The model as a policy of the platform's protocol (:func:`make_policy`).

        Args:
            k: Slate size.
            exploration: An :class:`~causalrec.platform.policy.Exploration`, or its kind:
                ``none`` (deterministic top-k), ``epsilon`` (ε-greedy) or ``softmax``
                (Plackett–Luce over the log-odds of the predicted click probabilities at
                ``temperature``), all with exact propensities.
            epsilon: ε of the ε-greedy policy (with a kind).
            temperature: Temperature of the softmax policy (with a kind).
        """
        self._check_fitted()
        if not isinstance(exploration, Exploration):
            exploration = Exploration(exploration, epsilon=epsilon, temperature=temperature)
        name = f"{self.name}:{exploration.kind}"
        return make_policy(ModelScorer(self), k, exploration, name=name)

    def session_policy(
        self,
        k: int = 1,
        exploration: Exploration | ExplorationKind = "none",
        *,
        epsilon: float = 0.1,
        temperature: float = 1.0,
    ) -> SessionPolicy:
        """The model acting on sessions (rollouts of a dynamic world, the closed loop).

        A model that scores users only ignores the session's history
        (:class:`~causalrec.platform.session.PolicyOnSessions` of :meth:`policy`); a
        ``transformer`` model reads it (:class:`~causalrec.methods.session_policy.HistoryPolicy`).
        Arguments as in :meth:`policy`.
        """
        return PolicyOnSessions(
            self.policy(k, exploration, epsilon=epsilon, temperature=temperature)
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Save the fitted model (see :meth:`~causalrec.methods.artifact.SavedModel.write`).

        A non-empty ``directory`` is refused unless ``overwrite``.

        Returns:
            The directory.
        """
        from causalrec.methods.artifact import SavedModel

        return SavedModel.write(directory, self, overwrite=overwrite).path

    @abc.abstractmethod
    def _get_state(self) -> ModelState:
        """The fitted state to persist (arrays and scikit-learn estimators only)."""

    @abc.abstractmethod
    def _set_state(self, state: ModelState, n_users: int, n_items: int) -> None:
        """Become the fitted model whose :meth:`_get_state` was ``state``."""
