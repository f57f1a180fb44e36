"""A world that persists across the closed loop's generations.

In one generation every user of the population has one session of ``session_length`` steps
(fewer if they leave) under the deployed policy, all sessions in one cohort that shares the world
clock (:mod:`causalrec.simulators.dynamics`). What the generation did carries over to the next:

* each user's preference θ_u, which drifts towards what they clicked (``interest_drift``);
* the item popularity, which moves towards the click share of the generation's steps
  (``popularity_feedback``), and with it relevance (``conformity``) and the logger's exposure.

Satiation and the history window start afresh each session (a generation is a long time for a
user). With neither drift nor popularity feedback, a generation is a draw from a static world and
nothing carries over.

Common random numbers: the draws of generation g come from ``SeedSequence([seed, g])`` (the
policy's draws, the click uniforms, the leave uniforms), so twin worlds with the same seed meet
the same users in the same order and draw the same uniforms; two arms that deploy the same
policy stay bit-identical generation after generation, and arms that differ differ only by what
their policies did.

References:
    Chaney, Stewart, Engelhardt, "How Algorithmic Confounding in Recommendation Systems Increases
    Homogeneity and Decreases Utility", RecSys 2018 (simulated feedback loops over generations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from causalrec.platform.errors import LogFormatError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.session import SessionPolicy, as_session_policy
from causalrec.platform.units import LongTermValue
from causalrec.simulators.dynamics import SessionState, UserDynamics
from causalrec.simulators.rollout import SessionStep, run_sessions
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.simulators.session_logs import session_steps_to_log

__all__ = ["GenerationRun", "GenerationTraffic", "LoopWorld", "WorldState"]

#: Stream of the rollout truth, apart from the generation's own draws.
_TRUTH_STREAM = 1


@dataclass
class WorldState:
    """What carries over from one generation to the next.

    Attributes:
        generation: Generations already run.
        rounds: Rounds logged so far (the next generation's first round id).
        theta: Scaled preference scale·θ_u per user, shape (n_users, d); ``None`` when interests
            do not drift (θ_u is then the world's own, for ever).
        popularity: Item popularity, shape (n_items,); ``None`` without popularity feedback.
    """

    generation: int
    rounds: int
    theta: np.ndarray | None
    popularity: np.ndarray | None

    @classmethod
    def initial(cls, simulator: ConfoundedRecSimulator) -> WorldState:
        """The world before any generation: its users' θ_u and its base popularity."""
        c = simulator.config
        scorer = simulator.relevance_scorer
        return cls(
            generation=0,
            rounds=0,
            theta=scorer.user_factors.copy() if c.interest_drift > 0 else None,
            popularity=simulator.popularity.copy() if c.popularity_feedback > 0 else None,
        )

    def copy(self) -> WorldState:
        """A deep copy."""
        return dataclasses.replace(
            self,
            theta=None if self.theta is None else self.theta.copy(),
            popularity=None if self.popularity is None else self.popularity.copy(),
        )

    def save(self, path: str | Path) -> Path:
        """Write the state as safetensors (arrays) with its counters in the metadata."""
        from safetensors.numpy import save_file

        arrays = {
            name: np.ascontiguousarray(value)
            for name, value in (("theta", self.theta), ("popularity", self.popularity))
            if value is not None
        }
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        save_file(
            arrays,
            str(partial),
            metadata={"generation": str(self.generation), "rounds": str(self.rounds)},
        )
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> WorldState:
        """Read a state written by :meth:`save`.

        Raises:
            LogFormatError: If the file is missing or not such a state.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise LogFormatError(f"world state: no file at {str(path)!r}")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            return cls(
                generation=int(metadata["generation"]),
                rounds=int(metadata["rounds"]),
                theta=arrays.get("theta"),
                popularity=arrays.get("popularity"),
            )
        except (KeyError, ValueError, OSError, SafetensorError) as exc:
            raise LogFormatError(f"world state {str(path)!r} is not readable: {exc}") from None


@dataclass(frozen=True)
class GenerationRun:
    """One generation of the population under a deployed policy.

    Attributes:
        generation: The generation's index (0-based).
        log: Its rounds with the deployed policy's propensities (K rows per round).
        returns: Expected clicks of each user's session given the states it went through
            (Rao–Blackwellised over the click draws), shape (n_users,).
        clicks: Clicks of each user's session as drawn, shape (n_users,).
        steps: Steps each user stayed, shape (n_users,).
    """

    generation: int
    log: LoggedFeedback
    returns: np.ndarray
    clicks: np.ndarray
    steps: np.ndarray


class GenerationTraffic(Protocol):
    """Who sees a generation's steps as they happen (a live server taking requests and clicks).

    :meth:`LoopWorld.run_generation` calls :meth:`begin` with the generation's sessions before
    the first step, and :meth:`after_step` with each step once its clicks are drawn, before the
    next step's slates are asked for.
    """

    def begin(self, sessions: SessionState) -> None:
        """The generation's sessions (their ``alive`` flags change in place as users leave)."""

    def after_step(self, step: SessionStep) -> None:
        """One step, with its slates and clicks."""


class LoopWorld:
    """A population of users whose state persists across generations (module docstring).

    Args:
        simulator: The world's structural causal model.
        state: Where the world stands (default: before any generation).
    """

    def __init__(self, simulator: ConfoundedRecSimulator, state: WorldState | None = None):
        self.simulator = simulator
        self.dynamics = UserDynamics(simulator)
        self.state = WorldState.initial(simulator) if state is None else state
        self.users = np.arange(simulator.n_users, dtype=np.int64)

    @property
    def generation(self) -> int:
        """Generations already run."""
        return self.state.generation

    def preferences(self) -> np.ndarray:
        """Each user's current preference scale·θ_u, shape (n_users, d)."""
        if self.state.theta is not None:
            return self.state.theta
        return self.simulator.relevance_scorer.user_factors

    def _sessions(self) -> SessionState:
        state = self.dynamics.start(self.users)
        if self.state.theta is not None:
            state.theta = self.state.theta.copy()
        if self.state.popularity is not None:
            state.popularity[0] = self.state.popularity
        return state

    def _roll(
        self,
        policy: SessionPolicy,
        entropy: list[int],
        traffic: GenerationTraffic | None = None,
    ) -> tuple[SessionState, list[SessionStep]]:
        rngs = tuple(np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(3))
        state = self._sessions()
        n, generation = len(self.users), self.state.generation
        if traffic is not None:
            traffic.begin(state)
        steps = []
        for step in run_sessions(
            self.dynamics,
            state,
            policy,
            horizon=self.simulator.config.session_length,
            session_id=generation * n + self.users,
            cohort=np.full(n, generation, dtype=np.int64),
            rngs=rngs,
        ):
            if traffic is not None:
                traffic.after_step(step)
            steps.append(step)
        return state, steps

    def run_generation(
        self,
        policy: object,
        *,
        seed: int,
        name: str | None = None,
        traffic: GenerationTraffic | None = None,
    ) -> GenerationRun:
        """Run one generation under ``policy`` and carry its effects into the world's state.

        Args:
            policy: The deployed policy (plain or session policy).
            seed: The loop's seed (the generation's draws come from ``[seed, generation]``).
            name: The log's policy name (default: the policy's).
            traffic: Told of the sessions and of each step as it happens (e.g.
                :class:`~causalrec.loop.serving.HttpTraffic`, which is also the policy then).

        Returns:
            The generation's log and per-user outcomes.
        """
        policy = as_session_policy(policy)
        self.simulator.check_policy(policy)
        state, steps = self._roll(policy, [seed, self.state.generation], traffic)
        log = session_steps_to_log(
            self.simulator,
            steps,
            name or policy.name,
            self.state.rounds,
            {"generation": self.state.generation, "seed": seed},
        )
        run = GenerationRun(
            generation=self.state.generation,
            log=log,
            returns=np.sum([s.expected_reward.sum(axis=1) for s in steps], axis=0),
            clicks=np.sum([s.clicks.sum(axis=1) for s in steps], axis=0),
            steps=np.sum([s.alive for s in steps], axis=0),
        )
        self.state = WorldState(
            generation=self.state.generation + 1,
            rounds=self.state.rounds + log.n_rows // log.slate_size,
            theta=None if state.theta is None else state.theta,
            popularity=None if state.popularity is None else state.popularity[0].copy(),
        )
        return run

    def long_term_value(self, policy: object, *, seed: int, replicas: int = 4) -> LongTermValue:
        """The rollout truth of ``policy`` from where the world stands now (state unchanged).

        ``replicas`` independent copies of the next generation (draws from ``[seed, generation,
        1, r]``) under ``policy``: the mean clicks per session. Its standard error takes the
        sessions as units, or the replicas when popularity feeds back (the population's sessions
        then share one popularity and are not independent).

        Args:
            policy: The policy (plain or session policy).
            seed: The loop's seed.
            replicas: Copies of the generation (>= 2 under popularity feedback).

        Returns:
            Clicks per session with its standard error; ``horizon`` is the session length.
        """
        policy = as_session_policy(policy)
        self.simulator.check_policy(policy)
        per_replica = []
        for replica in range(replicas):
            _, steps = self._roll(policy, [seed, self.state.generation, _TRUTH_STREAM, replica])
            per_replica.append(np.sum([s.expected_reward.sum(axis=1) for s in steps], axis=0))
        returns = np.stack(per_replica)  # (replicas, n_users)
        units = returns.mean(axis=1) if self.state.popularity is not None else returns.ravel()
        error = float(units.std(ddof=1) / np.sqrt(len(units))) if len(units) > 1 else np.nan
        return LongTermValue(
            float(returns.mean()),
            standard_error=error,
            horizon=self.simulator.config.session_length,
            n_sessions=returns.size,
            seed=seed,
        )
