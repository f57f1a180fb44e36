"""Fixtures shared by the methods tests."""

import pytest

from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs


@pytest.fixture(scope="session")
def popularity_world():
    """Exposure driven by popularity only; relevance independent of popularity."""
    simulator = ConfoundedRecSimulator(
        SimulatorConfig(
            n_users=1000, n_items=200, latent_dim=8, confounding=0.0, logging_beta=0.0,
            logging_gamma=2.0, conformity=0.0, seed=0,
        )
    )  # fmt: skip
    return simulator, generate_logs(simulator, n_rounds=50_000, seed=0)
