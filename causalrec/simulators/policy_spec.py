"""Policies named by a string: ``uniform``, ``empirical:LOG_DIR`` and the simulator's policies.

Named specs (``causalrec evaluate --policy``, ``causalrec simulate --policy``, A/B arms,
``causalrec ope-bench``; saved model directories are resolved on top of these by
:func:`causalrec.methods.policy_spec.resolve_policy`):

* ``uniform``: uniform random slates over the catalogue.
* ``empirical:LOG_DIR``: the context-free item–position distribution observed in another log
  (what a production policy did, read from its own log).
* With a simulator (given, or rebuilt from simulated logs' metadata): ``logging``, ``oracle``,
  ``softmax:T`` (Plackett–Luce on true relevance at temperature T) and ``epsilon_greedy:E``
  (the oracle's top-K with ε-uniform exploration).
"""

from __future__ import annotations

from causalrec.platform.empirical_policy import EmpiricalPolicy
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy, SoftmaxPolicy, TopKPolicy, UniformPolicy
from causalrec.platform.storage import read_logs
from causalrec.platform.validation import unknown_name_error
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.simulators.world import simulator_from_logs

__all__ = ["FILE_SPECS", "NAMED_POLICIES", "named_policy"]

#: Spec kinds that need the simulator.
_SIMULATOR_SPECS = ("logging", "oracle", "softmax", "epsilon_greedy")
#: Every named spec kind.
NAMED_POLICIES = ("uniform", "empirical", *_SIMULATOR_SPECS)
#: Spec kinds that read files.
FILE_SPECS = ("empirical",)


def named_policy(
    spec: str,
    *,
    logs: LoggedFeedback | None = None,
    world: ConfoundedRecSimulator | None = None,
) -> Policy:
    """The policy named by ``spec`` (see the module docstring).

    Args:
        spec: The policy spec.
        logs: The logs the policy will be evaluated on (catalogue and slate size; their
            simulator when ``world`` is not given).
        world: The simulator, if already built (it is never rebuilt then).

    Raises:
        UnknownNameError: For an unknown spec (with the closest match).
        ConfigError: For a spec without its argument, or a simulator spec on real logs.
    """
    if logs is None and world is None:
        raise ConfigError(f"policy spec {spec!r}: give the logs or the world it acts in")
    kind, _, argument = spec.partition(":")
    n_items = logs.n_items if logs is not None else world.n_items
    slate_size = logs.slate_size if logs is not None else world.slate_size
    if kind == "uniform":
        return UniformPolicy(n_items, slate_size)
    if kind == "empirical":
        if not argument:
            raise ConfigError("policy spec 'empirical:LOG_DIR' needs a log directory")
        source = read_logs(argument)
        return EmpiricalPolicy.from_log(source, n_items=n_items, name=f"empirical:{argument}")
    if kind not in _SIMULATOR_SPECS:
        raise unknown_name_error("policy spec", kind, NAMED_POLICIES)
    world = world or simulator_from_logs(logs)
    if kind == "logging":
        return world.logging_policy()
    if kind == "oracle":
        return world.oracle_policy()
    try:
        value = float(argument)
    except ValueError:
        raise ConfigError(f"policy spec {spec!r} needs a number after ':'") from None
    if kind == "softmax":
        return SoftmaxPolicy(
            world.relevance_scorer, temperature=value, slate_size=world.slate_size, name=spec
        )
    return TopKPolicy(world.relevance_scorer, slate_size=world.slate_size, epsilon=value, name=spec)
