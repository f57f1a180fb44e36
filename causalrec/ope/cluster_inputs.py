"""Cluster-level importance weights of a policy on a log, for MIPS and OffCEM.

With a deterministic embedding, each item's cluster c(a), the marginal weight of an impression
is π(c_i | x_i, k_i) / π_0(c_i | x_i, k_i), where π(c | x, k) = Σ_{a: c(a) = c} π(a | x, k) sums
the policy's item–position marginals over the cluster. A log records the logger's probability of
the item it showed only, so the cluster weights need the logging policy itself (the simulator's
``logging`` policy for a simulated log); it is checked against the logged pscores.

Clusters come from the caller (categories, a catalogue taxonomy) or from the log's item features
(:func:`item_clusters_from_features`, k-means).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from causalrec.ope.inputs import RoundInputs
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import Policy

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = ["check_item_clusters", "cluster_round_inputs", "item_clusters_from_features"]

_CHUNK_ROWS = 2048
#: Relative tolerance of the check that the logging policy reproduces the logged pscores.
PSCORE_RTOL = 1e-6


def item_clusters_from_features(
    item_features: np.ndarray, n_clusters: int, *, seed: int | None = 0
) -> np.ndarray:
    """Cluster items by their features with k-means.

    Args:
        item_features: Shape (n_items, n_features).
        n_clusters: Number of clusters, in [1, n_items].
        seed: Seed of k-means' initialisation.

    Returns:
        The cluster of every item, shape (n_items,), values in [0, n_clusters).
    """
    from sklearn.cluster import KMeans

    features = np.asarray(item_features, dtype=np.float64)
    if features.ndim != 2:
        raise DataError(f"item_features must be 2-d (n_items, n_features); got {features.shape}")
    if not 1 <= n_clusters <= len(features):
        raise ConfigError(f"n_clusters must be in [1, n_items={len(features)}]; got {n_clusters}")
    if n_clusters == len(features):
        return np.arange(n_clusters)
    model = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
    return model.fit_predict(features).astype(np.int64)


def check_item_clusters(item_clusters: np.ndarray, n_items: int) -> np.ndarray:
    """Check a cluster id per item, shape (n_items,), non-negative integers; returns int64."""
    clusters = np.asarray(item_clusters)
    if clusters.shape != (n_items,):
        raise DataError(f"item_clusters must have shape (n_items={n_items},); got {clusters.shape}")
    if clusters.dtype.kind not in "iu" or (clusters < 0).any():
        raise DataError("item_clusters must be non-negative integers (one cluster id per item)")
    return clusters.astype(np.int64)


def cluster_round_inputs(inputs: EvaluationInputs) -> RoundInputs:
    """The impressions' inputs with cluster weights in place of item weights (cached).

    Args:
        inputs: The log, the target policy, ``item_clusters`` and ``logging_policy``.

    Returns:
        :class:`RoundInputs` per impression: reward, weight π(c_i | x_i, k_i) /
        π_0(c_i | x_i, k_i), and the reward model's q̂ terms of ``inputs.impressions``.
    """
    if inputs.item_clusters is None or inputs.logging_policy is None:
        raise DataError(
            "mips, snmips and offcem need item clusters and the logging policy: pass "
            "item_clusters= and logging_policy= to evaluate (on the command line, "
            "--item-clusters N and --logging-policy SPEC)"
        )
    return inputs.cached("cluster_inputs", lambda: _cluster_inputs(inputs))


def _cluster_inputs(inputs: EvaluationInputs) -> RoundInputs:
    logs, clusters = inputs.logs, inputs.item_clusters
    target = _cluster_probability(inputs.policy, logs, clusters, logging=False)
    behaviour = _cluster_probability(inputs.logging_policy, logs, clusters, logging=True)
    impressions = inputs.impressions
    return RoundInputs(
        reward=impressions.reward,
        weight=target / behaviour,
        q_factual=impressions.q_factual,
        q_policy=impressions.q_policy,
    )


def _cluster_probability(
    policy: Policy,
    logs,
    clusters: np.ndarray,
    *,
    logging: bool,
) -> np.ndarray:
    """π(c(a_i) | x_i, k_i) for every impression, shape (n_rows,).

    For the logging policy (``logging``), also checks that it gives the logged pscores and a
    positive probability to every logged cluster.
    """
    name = "logging_policy" if logging else "policy"
    if policy.n_items != logs.n_items:
        raise DataError(f"{name} has n_items={policy.n_items}; the log has {logs.n_items}")
    n = logs.n_rows
    logged_cluster = clusters[logs.item_id]
    out = np.empty(n)
    shown = policy.deterministic_slates(logs.user_id)
    if shown is not None:
        out[:] = clusters[shown[np.arange(n), logs.position]] == logged_cluster
    else:
        for start in range(0, n, _CHUNK_ROWS):
            rows = np.arange(start, min(start + _CHUNK_ROWS, n))
            dist = policy.action_distribution(logs.user_id[rows])
            dist = dist[:, :, None] if dist.ndim == 2 else dist
            at_position = dist[np.arange(len(rows)), :, logs.position[rows]]  # (c, n_items)
            in_cluster = clusters[None, :] == logged_cluster[rows, None]
            out[rows] = np.einsum("ci,ci->c", at_position, in_cluster)
            if logging and policy.exact_marginals:
                _check_pscore(at_position[np.arange(len(rows)), logs.item_id[rows]], logs, rows)
    if logging and (out <= 0).any():
        row = int(np.flatnonzero(out <= 0)[0])
        raise DataError(
            f"logging_policy gives the logged item's cluster probability 0 at row {row}"
        )
    return out


def _check_pscore(probability: np.ndarray, logs, rows: np.ndarray) -> None:
    logged = logs.pscore[rows]
    off = np.abs(probability - logged) > PSCORE_RTOL * np.maximum(logged, 1e-300)
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise DataError(
            f"logging_policy does not reproduce the log's pscore: row {rows[first]} has pscore "
            f"{logged[first]:.6g}, the policy gives {probability[first]:.6g}; "
            "pass the policy that wrote the log"
        )
