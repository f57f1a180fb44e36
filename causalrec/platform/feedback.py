"""``LoggedFeedback``: the typed, frozen container of logged bandit feedback.

One row per impression (for slates of K items a round has K rows). Arrays are numpy; the
container validates lengths, dtypes and value ranges once, at construction.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from causalrec.platform.errors import DataError
from causalrec.platform.schema import SESSION_COLUMNS

__all__ = ["LoggedFeedback", "one_step_sessions", "round_slate_probability"]


@dataclass(frozen=True, eq=False)
class LoggedFeedback:
    """Logged feedback of a (possibly unknown) logging policy.

    Attributes:
        round_id: Round (request) index, shape (n_rows,), int64.
        user_id: User id, shape (n_rows,), int64.
        position: 0-based slate position, shape (n_rows,), int64.
        item_id: Shown item, shape (n_rows,), int64.
        click: Observed clicks (0/1), shape (n_rows,), int8.
        pscore: ``P(item at this position | user)`` under the logging policy, shape (n_rows,);
            for K = 1 the exact probability of the shown item. NaN where unknown.
        pscore_prefix: ``P(a_1..a_k | user)``, the probability of the slate prefix up to and
            including this position, shape (n_rows,). Equals ``pscore`` when K = 1.
        user_features: Observed user features, shape (n_rows, n_user_features), float32.
        expected_reward: Ground-truth click probability of the impression (simulated logs
            only; NaN otherwise), shape (n_rows,).
        policy: Name of the policy that chose the impression, shape (n_rows,).
        session_id: Session of the round, shape (n_rows,), int64; defaults to ``round_id``
            (every round its own one-step session).
        step: 0-based step of the round within its session, shape (n_rows,), int64; default 0.
        timestamp: World clock of the round, shape (n_rows,), int64; defaults to ``round_id``.
        step_pscore: P(the whole slate of this step | state) under the logger, shape (n_rows,)
            (the same on every row of a round); defaults to the round's last ``pscore_prefix``.
        n_items: Size of the catalogue.
        slate_size: Positions per round (K).
        user_table: Features of every user, shape (n_users, n_user_features), or ``None``.
        item_table: Features of every item, shape (n_items, n_item_features), or ``None``.
        metadata: Self-description (simulator config, policy, seed, schema version, ...).
    """

    round_id: np.ndarray
    user_id: np.ndarray
    position: np.ndarray
    item_id: np.ndarray
    click: np.ndarray
    pscore: np.ndarray
    pscore_prefix: np.ndarray
    user_features: np.ndarray
    expected_reward: np.ndarray
    policy: np.ndarray
    n_items: int
    slate_size: int = 1
    user_table: np.ndarray | None = None
    item_table: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: np.ndarray | None = None
    step: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    step_pscore: np.ndarray | None = None

    #: The per-row array fields (one entry per impression), in schema order.
    ROW_FIELDS: ClassVar[tuple[str, ...]] = (
        "round_id",
        "user_id",
        "position",
        "item_id",
        "click",
        "pscore",
        "pscore_prefix",
        "expected_reward",
        "policy",
        "session_id",
        "step",
        "timestamp",
        "step_pscore",
        "user_features",
    )

    def __post_init__(self) -> None:
        n = len(self.round_id)
        self._fill_session_fields()
        for name in self.ROW_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise DataError(f"{name} must be a numpy array; got {type(value).__name__}")
            if value.shape[:1] != (n,):
                raise DataError(f"{name} must have {n} rows (as round_id); got shape {value.shape}")
        integers = ("round_id", "user_id", "position", "item_id", "click")
        for name in (*integers, "session_id", "step", "timestamp"):
            if getattr(self, name).dtype.kind not in "iu":
                raise DataError(f"{name} must be integer; got {getattr(self, name).dtype}")
        if self.user_features.ndim != 2:
            raise DataError(f"user_features must be 2-d; got shape {self.user_features.shape}")
        if n == 0:
            return
        if self.item_id.min() < 0 or self.item_id.max() >= self.n_items:
            bad = int(np.flatnonzero((self.item_id < 0) | (self.item_id >= self.n_items))[0])
            raise DataError(
                f"item_id must be in [0, n_items={self.n_items}); "
                f"got {self.item_id[bad]} at row {bad}"
            )
        if self.position.min() < 0 or self.position.max() >= self.slate_size:
            bad = int(np.flatnonzero((self.position < 0) | (self.position >= self.slate_size))[0])
            raise DataError(
                f"position must be in [0, slate_size={self.slate_size}); got "
                f"{self.position[bad]} at row {bad}"
            )
        if self.step.min() < 0:
            bad = int(np.flatnonzero(self.step < 0)[0])
            raise DataError(f"step must be >= 0; got {self.step[bad]} at row {bad}")
        for name in ("pscore", "pscore_prefix", "step_pscore"):
            values = getattr(self, name)
            invalid = ~np.isnan(values) & ((values <= 0) | (values > 1 + 1e-9))
            if invalid.any():
                bad = int(np.flatnonzero(invalid)[0])
                raise DataError(f"{name} must be in (0, 1]; got {values[bad]} at row {bad}")

    def _fill_session_fields(self) -> None:
        """Give logs without sessions their defaults: every round a one-step session."""
        missing = [name for name in SESSION_COLUMNS if getattr(self, name) is None]
        if missing:
            defaults = one_step_sessions(
                np.asarray(self.round_id), np.asarray(self.position), self.pscore_prefix
            )
            for name in missing:
                object.__setattr__(self, name, defaults[name])

    # -- derived ---------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """Number of impressions."""
        return len(self.round_id)

    @property
    def n_rounds(self) -> int:
        """Number of rounds (requests)."""
        return int(np.unique(self.round_id).size)

    def __len__(self) -> int:
        return self.n_rows

    def fingerprint(self) -> str:
        """A short SHA-256 of the rows, catalogue and slate size: which data a model saw.

        Two logs with the same fingerprint hold the same impressions in the same order.
        """
        digest = hashlib.sha256(f"{self.n_items}:{self.slate_size}:{self.n_rows}".encode())
        for name in ("round_id", "user_id", "position", "item_id", "click", "pscore"):
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return digest.hexdigest()[:16]

    def to_pandas(self) -> pd.DataFrame:
        """One row per impression; user features as columns ``user_feature_0..``."""
        frame = pd.DataFrame({name: getattr(self, name) for name in self.ROW_FIELDS[:-1]})
        for j in range(self.user_features.shape[1]):
            frame[f"user_feature_{j}"] = self.user_features[:, j]
        return frame

    def select(self, mask: np.ndarray) -> LoggedFeedback:
        """Rows where ``mask`` (boolean, shape (n_rows,)) is true, or the rows indexed by it."""
        return dataclasses.replace(
            self, **{name: getattr(self, name)[mask] for name in self.ROW_FIELDS}
        )

    @classmethod
    def concat(cls, parts: list[LoggedFeedback]) -> LoggedFeedback:
        """Concatenate logs of the same catalogue; tables and metadata come from the first."""
        if not parts:
            raise DataError("concat needs at least one LoggedFeedback")
        values = {
            name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.ROW_FIELDS
        }
        return dataclasses.replace(parts[0], **values)

    @classmethod
    def from_slates(
        cls,
        *,
        users: np.ndarray,
        slates: np.ndarray,
        clicks: np.ndarray,
        pscore: np.ndarray,
        pscore_prefix: np.ndarray,
        user_features: np.ndarray,
        policy: str | np.ndarray,
        n_items: int,
        first_round: int = 0,
        expected_reward: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        session_id: np.ndarray | None = None,
        step: np.ndarray | None = None,
        timestamp: np.ndarray | None = None,
    ) -> LoggedFeedback:
        """One row per shown item from per-round slates (rounds numbered from ``first_round``).

        Args:
            users: User of each round, shape (n,).
            slates: Shown items, shape (n, K), position 0 first.
            clicks: Clicks, shape (n, K).
            pscore: Marginal probability of each item at its position, shape (n, K).
            pscore_prefix: Probability of each slate prefix, shape (n, K).
            user_features: Observed features of each round's user, shape (n, d).
            policy: Name of the policy (one for all rounds, or shape (n,)).
            n_items: Catalogue size.
            first_round: Id of the first round.
            expected_reward: True click probabilities, shape (n, K) (simulated rounds only;
                default NaN).
            metadata: Self-description.
            session_id: Session of each round, shape (n,) (default: the round id).
            step: Step of each round within its session, shape (n,) (default 0).
            timestamp: World clock of each round, shape (n,) (default: the round id).

        Raises:
            DataError: If the shapes disagree (naming the argument).
        """
        slates = np.asarray(slates)
        if slates.ndim != 2:
            raise DataError(f"slates must have shape (n, K); got {slates.shape}")
        n, k = slates.shape
        users = np.asarray(users, dtype=np.int64)
        if users.shape != (n,):
            raise DataError(f"users must have shape ({n},) as slates; got {users.shape}")
        for name, value in (
            ("clicks", clicks),
            ("pscore", pscore),
            ("pscore_prefix", pscore_prefix),
        ):
            if np.shape(value) != (n, k):
                raise DataError(
                    f"{name} must have shape ({n}, {k}) as slates; got {np.shape(value)}"
                )
        features = np.asarray(user_features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n:
            raise DataError(f"user_features must have shape ({n}, d); got {features.shape}")
        names = np.broadcast_to(np.asarray(policy), (n,))

        def each_row(per_round: np.ndarray) -> np.ndarray:
            """A per-round array on the K rows of its round (no copy for K = 1)."""
            return per_round if k == 1 else np.repeat(per_round, k, axis=0)

        expected = np.full((n, k), np.nan) if expected_reward is None else expected_reward
        rounds = np.arange(first_round, first_round + n, dtype=np.int64)
        per_round = {}
        for name, value, default in (
            ("session_id", session_id, rounds),
            ("step", step, np.zeros(n, dtype=np.int64)),
            ("timestamp", timestamp, rounds),
        ):
            value = default if value is None else np.asarray(value, dtype=np.int64)
            if value.shape != (n,):
                raise DataError(f"{name} must have shape ({n},) as slates; got {value.shape}")
            per_round[name] = each_row(value)
        prefix = np.asarray(pscore_prefix, dtype=np.float64)
        return cls(
            round_id=each_row(rounds),
            user_id=each_row(users),
            position=np.tile(np.arange(k, dtype=np.int64), n),
            item_id=slates.reshape(-1).astype(np.int64, copy=False),
            click=np.asarray(clicks).reshape(-1).astype(np.int8, copy=False),
            pscore=np.asarray(pscore, dtype=np.float64).reshape(-1),
            pscore_prefix=prefix.reshape(-1),
            user_features=each_row(features),
            expected_reward=np.asarray(expected, dtype=np.float64).reshape(-1),
            policy=each_row(names) if k > 1 or names.base is None else names.copy(),
            n_items=n_items,
            slate_size=k,
            metadata=metadata or {},
            step_pscore=each_row(prefix[:, -1]),
            **per_round,
        )

    def split_by_round(self, held_out_fraction: float) -> tuple[LoggedFeedback, LoggedFeedback]:
        """The first rounds and the last ``held_out_fraction`` of them (by round id).

        A round's impressions stay together, and the held-out rounds come after every training
        round, as they would in deployment.

        Raises:
            DataError: If ``held_out_fraction`` is not in (0, 1) or the log has < 2 rounds.
        """
        if not 0 < held_out_fraction < 1:
            raise DataError(f"held_out_fraction must be in (0, 1); got {held_out_fraction}")
        rounds = np.unique(self.round_id)
        if len(rounds) < 2:
            raise DataError(f"splitting by round needs >= 2 rounds; the log has {len(rounds)}")
        cut = rounds[max(1, min(len(rounds) - 1, int(len(rounds) * (1 - held_out_fraction))))]
        return self.select(self.round_id < cut), self.select(self.round_id >= cut)


def round_slate_probability(
    round_id: np.ndarray, position: np.ndarray, pscore_prefix: np.ndarray
) -> np.ndarray:
    """Each row's whole-slate probability: its round's ``pscore_prefix`` at the last position.

    Args:
        round_id: Shape (n_rows,).
        position: Shape (n_rows,).
        pscore_prefix: Shape (n_rows,).

    Returns:
        Shape (n_rows,), float64.
    """
    prefix = np.asarray(pscore_prefix, dtype=np.float64)
    if len(prefix) == 0 or np.all(position == 0):
        return prefix.copy()
    order = np.lexsort((position, round_id))
    sorted_rounds = round_id[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_rounds[1:] != sorted_rounds[:-1]
    group = np.cumsum(np.r_[True, last[:-1]]) - 1  # round index of each sorted row
    out = np.empty(len(order))
    out[order] = prefix[order][last][group]
    return out


def one_step_sessions(
    round_id: np.ndarray, position: np.ndarray, pscore_prefix: np.ndarray
) -> dict[str, np.ndarray]:
    """The session fields of a log without sessions: every round a one-step session.

    ``session_id`` and ``timestamp`` are the round id (the same array, not a copy), ``step`` is 0
    and ``step_pscore`` the round's whole-slate probability (:func:`round_slate_probability`).

    Returns:
        The arrays of :data:`SESSION_COLUMNS`, each of shape (n_rows,).
    """
    return {
        "session_id": round_id,
        "step": np.zeros(len(round_id), dtype=np.int64),
        "timestamp": round_id,
        "step_pscore": round_slate_probability(round_id, position, pscore_prefix),
    }
