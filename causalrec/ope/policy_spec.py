"""Policies named by a string: ``uniform``, ``empirical:LOG_DIR`` and the simulator's policies.

Specs (used by ``causalrec evaluate --policy`` and ``causalrec ope-bench``):

* ``uniform``: uniform random slates over the log's catalogue.
* ``empirical:LOG_DIR``: the context-free item–position distribution observed in another log
  (what a production policy did, read from its own log).
* For simulated logs (their metadata holds the simulator config): ``logging``, ``oracle``,
  ``softmax:T`` (Plackett–Luce on true relevance at temperature T) and ``epsilon_greedy:E``
  (the oracle's top-K with ε-uniform exploration).
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy, SlateSample, SoftmaxPolicy, TopKPolicy, UniformPolicy
from causalrec.platform.storage import read_logs
from causalrec.platform.validation import unknown_name_error

__all__ = ["EmpiricalPolicy", "resolve_policy", "simulator_from_logs"]

_SIMULATOR_SPECS = ("logging", "oracle", "softmax", "epsilon_greedy")


class EmpiricalPolicy(Policy):
    """A context-free policy: P(item i at position k) as observed in a log.

    Positions are independent under this policy (it knows only marginals), so
    :meth:`prefix_probability` is the product of the marginals and :meth:`sample` may repeat an
    item across positions; it is meant for evaluating logs whose rows are separate impressions
    (such as the Open Bandit Dataset), not for drawing slates.

    Args:
        marginals: Shape (n_items, K), columns summing to one.
        name: Identifier written into tables.
    """

    def __init__(self, marginals: np.ndarray, name: str = "empirical"):
        marginals = np.asarray(marginals, dtype=np.float64)
        if marginals.ndim != 2 or not np.allclose(marginals.sum(axis=0), 1.0):
            raise DataError("marginals must have shape (n_items, K) with columns summing to 1")
        self.marginals, self.name = marginals, name
        self.n_items, self.slate_size = marginals.shape

    @classmethod
    def from_log(cls, log: LoggedFeedback, *, n_items: int | None = None, name: str = "empirical"):
        """The item–position frequencies of ``log`` (over ``n_items``, default the log's)."""
        n_items = n_items or log.n_items
        if log.item_id.max() >= n_items:
            raise DataError(f"the log shows item {log.item_id.max()}; n_items is {n_items}")
        counts = np.zeros((n_items, log.slate_size))
        np.add.at(counts, (log.item_id, log.position), 1.0)
        totals = counts.sum(axis=0)
        if (totals == 0).any():
            empty = int(np.flatnonzero(totals == 0)[0])
            raise DataError(f"the log has no impression at position {empty}")
        return cls(counts / totals, name=name)

    @override
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        dist = np.broadcast_to(self.marginals, (len(users), *self.marginals.shape))
        return self._format(dist)

    @override
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        n = len(users)
        cdf = np.cumsum(self.marginals, axis=0)
        draws = rng.random((n, self.slate_size))
        actions = np.stack(
            [np.searchsorted(cdf[:, k], draws[:, k] * cdf[-1, k]) for k in range(self.slate_size)],
            axis=1,
        )
        actions = np.minimum(actions, self.n_items - 1)
        marginal = self.marginals[actions, np.arange(self.slate_size)]
        return SlateSample(actions, np.cumprod(marginal, axis=1), marginal)

    @override
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        slates = np.asarray(slates)
        return np.cumprod(self.marginals[slates, np.arange(slates.shape[1])], axis=1)


def simulator_from_logs(logs: LoggedFeedback):
    """Rebuild the simulator that wrote ``logs`` from their metadata (simulated logs only)."""
    from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig

    config = logs.metadata.get("simulator")
    if not config:
        raise ConfigError("these logs are not simulated: their metadata has no simulator config")
    return ConfoundedRecSimulator(SimulatorConfig.from_dict(config, source="log metadata"))


def resolve_policy(spec: str, logs: LoggedFeedback, simulator=None) -> Policy:
    """Build the policy named by ``spec`` for evaluation on ``logs`` (see the module docstring).

    Args:
        spec: The policy spec.
        logs: The logs the policy will be evaluated on (catalogue size, slate size, simulator).
        simulator: The simulator behind ``logs``, if already built.
    """
    kind, _, argument = spec.partition(":")
    if kind == "uniform":
        return UniformPolicy(logs.n_items, logs.slate_size)
    if kind == "empirical":
        if not argument:
            raise ConfigError("policy spec 'empirical:LOG_DIR' needs a log directory")
        source = read_logs(argument)
        return EmpiricalPolicy.from_log(source, n_items=logs.n_items, name=f"empirical:{argument}")
    if kind not in _SIMULATOR_SPECS:
        raise unknown_name_error("policy spec", kind, ("uniform", "empirical", *_SIMULATOR_SPECS))
    simulator = simulator or simulator_from_logs(logs)
    if kind == "logging":
        return simulator.logging_policy()
    if kind == "oracle":
        return simulator.oracle_policy()
    try:
        value = float(argument)
    except ValueError:
        raise ConfigError(f"policy spec {spec!r} needs a number after ':'") from None
    if kind == "softmax":
        return SoftmaxPolicy(
            simulator.relevance_scorer,
            temperature=value,
            slate_size=simulator.slate_size,
            name=spec,
        )
    return TopKPolicy(
        simulator.relevance_scorer, slate_size=simulator.slate_size, epsilon=value, name=spec
    )
