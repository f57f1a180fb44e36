"""Shared fixtures: small simulators, one Ray cluster per test session."""

from __future__ import annotations

import pytest

from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig

#: Fixture data and the scripts that regenerate it (some import Open Bandit Pipeline, which is
#: not a dependency) are inputs of tests, not tests or doctests.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def small_simulator() -> ConfoundedRecSimulator:
    """A small confounded world (fast to build and to enumerate)."""
    return ConfoundedRecSimulator(
        SimulatorConfig(n_users=300, n_items=40, latent_dim=8, confounding=0.9, seed=3)
    )


@pytest.fixture(scope="session")
def slate_simulator() -> ConfoundedRecSimulator:
    """A small world with slates of three items."""
    return ConfoundedRecSimulator(
        SimulatorConfig(n_users=200, n_items=25, latent_dim=8, slate_size=3, seed=5)
    )


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster shared by every test that needs Ray."""
    import ray

    from causalrec.platform.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
