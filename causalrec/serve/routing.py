"""A/B assignment: users split between two arms by a salted hash of their id.

The split lives in the serving layer, as in production: the ingress routes each user to the
recommender of its arm, and ``causalrec abtest`` uses the same function to run the same split
in-process. The assignment is deterministic (the same user, salt and share always give the same
arm, in every process and on every machine) and independent of the order users arrive in.

The hash is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) of the user id XOR a 64-bit digest of the salt; its top 53 bits make a uniform number
in [0, 1) that is compared with the treatment share.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import ConfigError

__all__ = ["ARMS", "ExperimentSplit"]

#: Arm names: ``a`` (control) and ``b`` (treatment).
ARMS = ("a", "b")

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of ``values`` (uint64, any shape); wraps modulo 2**64."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK


@dataclass(frozen=True)
class ExperimentSplit:
    """A deterministic split of users into arms ``a`` and ``b``.

    Attributes:
        salt: Salt of the hash; a new salt reshuffles users (a new experiment).
        share_b: Share of users in arm ``b``, in (0, 1).
    """

    salt: str = "causalrec-ab"
    share_b: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.share_b < 1.0:
            raise ConfigError(f"share_b must be in (0, 1); got {self.share_b}")
        digest = hashlib.blake2b(self.salt.encode(), digest_size=8).digest()
        # Hashed once: the ingress assigns every request with the same split.
        object.__setattr__(self, "_salt_key", np.uint64(int.from_bytes(digest, "little")))

    def buckets(self, user_ids: np.ndarray) -> np.ndarray:
        """Uniform hash of each user in [0, 1), shape (n,)."""
        users = np.asarray(user_ids)
        if users.size and users.min() < 0:
            raise ConfigError(f"user ids must be >= 0; got {int(users.min())}")
        with np.errstate(over="ignore"):
            hashed = _splitmix64(users.astype(np.uint64) ^ self._salt_key)
        return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)

    def in_b(self, user_ids: np.ndarray) -> np.ndarray:
        """Whether each user is in arm ``b``, shape (n,) bool."""
        return self.buckets(user_ids) < self.share_b

    def arms(self, user_ids: np.ndarray) -> np.ndarray:
        """Arm name (``"a"`` or ``"b"``) of each user, shape (n,)."""
        return np.where(self.in_b(user_ids), ARMS[1], ARMS[0])
