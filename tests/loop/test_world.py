"""The loop's persistent world: exact truth when static, state that carries over, twins on CRN."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.loop.world import LoopWorld, WorldState
from causalrec.platform.errors import LogFormatError
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def dynamic_world() -> ConfoundedRecSimulator:
    """Drift, popularity feedback and leaving, small."""
    return ConfoundedRecSimulator(
        SimulatorConfig(
            n_users=200, n_items=40, latent_dim=8, seed=4, session_length=4,
            interest_drift=0.2, popularity_feedback=0.1, conformity=0.5, logging_gamma=1.0,
            leave_base=0.2, leave_sensitivity=1.0,
        )
    )  # fmt: skip


def test_in_a_static_world_the_truth_is_session_length_times_the_exact_value(small_simulator):
    """No dynamics, no leaving: every user's session is T independent steps of the same user,
    and a deterministic policy's Rao–Blackwellised return is exact per user."""
    world = LoopWorld(small_simulator)
    oracle = small_simulator.oracle_policy()
    truth = world.long_term_value(oracle, seed=0, replicas=2)
    T = small_simulator.config.session_length
    assert float(truth) == pytest.approx(T * float(small_simulator.policy_value(oracle)), rel=1e-12)
    logging = world.long_term_value(small_simulator.session_logging_policy(), seed=0, replicas=8)
    expected = T * float(small_simulator.policy_value(small_simulator.logging_policy()))
    assert abs(float(logging) - expected) < 4 * logging.standard_error
    assert world.generation == 0  # the truth leaves the world where it stands


def test_drift_and_popularity_carry_over_to_the_next_generation(dynamic_world):
    world = LoopWorld(dynamic_world)
    before = world.state.copy()
    run = world.run_generation(dynamic_world.session_logging_policy(), seed=1)
    assert world.generation == 1 and run.generation == 0
    assert world.state.rounds == run.log.n_rows  # K = 1: one row per round
    clicked = np.bincount(run.log.user_id[run.log.click > 0], minlength=dynamic_world.n_users) > 0
    moved = ~np.isclose(world.state.theta, before.theta).all(axis=1)
    np.testing.assert_array_equal(moved, clicked)  # interests move only after a click
    assert not np.allclose(world.state.popularity, before.popularity)
    assert world.state.popularity.sum() == pytest.approx(1.0)
    # Sessions end when users leave; the log holds only the steps users stayed for.
    assert run.steps.min() >= 1 and run.steps.max() <= 4 and run.steps.mean() < 4
    assert len(run.log.user_id) == run.steps.sum()
    np.testing.assert_array_equal(
        np.bincount(run.log.step), np.bincount(run.steps - 1)[::-1].cumsum()[::-1]
    )


def test_a_saved_state_continues_exactly_as_the_world_that_saved_it(dynamic_world, tmp_path):
    policy = dynamic_world.session_logging_policy()
    world = LoopWorld(dynamic_world)
    world.run_generation(policy, seed=2)
    world.state.save(tmp_path / "world.safetensors")
    restored = LoopWorld(dynamic_world, WorldState.load(tmp_path / "world.safetensors"))
    assert restored.generation == 1 and restored.state.rounds == world.state.rounds
    a, b = world.run_generation(policy, seed=2), restored.run_generation(policy, seed=2)
    np.testing.assert_array_equal(a.log.item_id, b.log.item_id)
    np.testing.assert_array_equal(a.log.click, b.log.click)
    np.testing.assert_array_equal(a.log.round_id, b.log.round_id)
    np.testing.assert_array_equal(world.state.theta, restored.state.theta)
    (tmp_path / "broken.safetensors").write_bytes(b"not a state")
    with pytest.raises(LogFormatError, match=r"broken\.safetensors"):
        WorldState.load(tmp_path / "broken.safetensors")


def test_twin_worlds_stay_identical_under_one_policy_and_differ_under_two(dynamic_world):
    logger, uniform = dynamic_world.session_logging_policy(), dynamic_world.uniform_policy()
    twins = [LoopWorld(dynamic_world) for _ in range(3)]
    for generation in range(3):
        runs = [
            w.run_generation(p, seed=5)
            for w, p in zip(twins, (logger, logger, uniform), strict=True)
        ]
        np.testing.assert_array_equal(runs[0].log.item_id, runs[1].log.item_id)
        np.testing.assert_array_equal(runs[0].log.click, runs[1].log.click)
        np.testing.assert_array_equal(runs[0].returns, runs[1].returns)
        assert not np.array_equal(runs[0].returns, runs[2].returns), generation
    np.testing.assert_array_equal(twins[0].state.theta, twins[1].state.theta)
    np.testing.assert_array_equal(twins[0].state.popularity, twins[1].state.popularity)
    assert not np.array_equal(twins[0].state.popularity, twins[2].state.popularity)
    # Common random numbers: the same users start each generation, in the same order.
    np.testing.assert_array_equal(
        np.unique(runs[0].log.session_id), np.unique(runs[2].log.session_id)
    )
