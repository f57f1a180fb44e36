"""`import causalrec` registers causalrec/ConfoundedRec-v0 lazily, exactly once."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import warnings

import gymnasium as gym

import causalrec

ENV_ID = "causalrec/ConfoundedRec-v0"


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (warnings are errors there too)."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_causalrec_alone_makes_the_env():
    result = run_python(
        """
        import causalrec, gymnasium
        from gymnasium.utils.env_checker import check_env

        env = gymnasium.make("causalrec/ConfoundedRec-v0", n_users=50, n_items=10, latent_dim=4)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        check_env(env.unwrapped)
        env.close()
        """
    )
    assert result.returncode == 0, result.stderr


def test_import_causalrec_is_light():
    result = run_python(
        """
        import sys
        import causalrec
        import gymnasium

        assert "causalrec/ConfoundedRec-v0" in gymnasium.registry
        heavy = [
            name
            for name in sys.modules
            if name.split(".")[0] in ("torch", "ray") or name.startswith("causalrec.simulators")
        ]
        assert not heavy, heavy
        """
    )
    assert result.returncode == 0, result.stderr


def test_entry_points_are_lazy_strings():
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "causalrec.simulators.env:ConfoundedRecEnv"
    assert spec.vector_entry_point == "causalrec.simulators.vector_env:ConfoundedRecVectorEnv"
    assert causalrec.ENV_ID == ENV_ID


def test_registering_again_is_a_no_op():
    spec = gym.spec(ENV_ID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns "Overriding environment ..."
        causalrec.register_envs()
        importlib.import_module("causalrec.simulators")  # no second registration there
    assert gym.spec(ENV_ID) is spec
