"""Simulators: a recommender world with confounded exposure and exact ground truth.

:class:`ConfoundedRecSimulator` is the structural causal model; :class:`ConfoundedRecEnv` is its
Gymnasium interface (registered as ``causalrec/ConfoundedRec-v0`` by ``import causalrec``) and
:class:`ConfoundedRecVectorEnv` the batched one; :func:`generate_logs` and :func:`write_logs`
produce logged feedback with exact propensities and ground-truth expected rewards. With the
dynamics fields on, users drift, tire and leave (:mod:`causalrec.simulators.dynamics`):
:meth:`ConfoundedRecSimulator.long_term_value` is the truth over sessions and
:func:`generate_session_logs` / :func:`write_session_logs` log whole sessions.
"""

from causalrec import ENV_ID
from causalrec.simulators.config import SimulatorConfig, load_simulator_config
from causalrec.simulators.graph import CausalGraph, Edge, Node
from causalrec.simulators.logs import LogSummary, generate_logs, iter_log_chunks, write_logs
from causalrec.simulators.scm import BilinearScorer, ConfoundedRecSimulator
from causalrec.simulators.session_logs import (
    SessionLogSummary,
    generate_session_logs,
    iter_session_log_chunks,
    write_session_logs,
)

__all__ = [
    "ENV_ID",
    "BilinearScorer",
    "CausalGraph",
    "ConfoundedRecEnv",
    "ConfoundedRecSimulator",
    "ConfoundedRecVectorEnv",
    "Edge",
    "LogSummary",
    "Node",
    "SessionLogSummary",
    "SimulatorConfig",
    "generate_logs",
    "generate_session_logs",
    "iter_log_chunks",
    "iter_session_log_chunks",
    "load_simulator_config",
    "write_logs",
    "write_session_logs",
]


def __getattr__(name: str):
    # The environments import lazily so that `import causalrec.simulators` stays light.
    if name == "ConfoundedRecEnv":
        from causalrec.simulators.env import ConfoundedRecEnv

        return ConfoundedRecEnv
    if name == "ConfoundedRecVectorEnv":
        from causalrec.simulators.vector_env import ConfoundedRecVectorEnv

        return ConfoundedRecVectorEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
