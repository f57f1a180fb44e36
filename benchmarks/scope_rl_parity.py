"""The sequential estimators against SCOPE-RL's on the same sessions (a one-off parity check).

Usage::

    pip download scope-rl==0.2.1 --no-deps -d /tmp/scope-rl
    python benchmarks/scope_rl_parity.py /tmp/scope-rl/scope_rl-0.2.1-py3-none-any.whl

SCOPE-RL is not a dependency: it pulls in d3rlpy and gym. Its discrete basic estimators are
plain numpy, so this script loads them from the wheel with empty stand-ins for the gym and
d3rlpy modules their package imports, and compares PDIS and DR with its
``PerDecisionImportanceSampling`` and ``DoublyRobust``, and WPDIS and WDR with its
``SelfNormalizedPDIS`` and ``SelfNormalizedDR`` (which add 1e-10 to each denominator), on 2,000
sessions of the small MDP of ``tests/ope/test_sequential.py`` with γ = 1 and 0.9.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import tempfile
import types
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_scope_rl(wheel: Path, root: Path):
    """SCOPE-RL's ``ope.discrete.basic_estimators`` from ``wheel``, without gym or d3rlpy."""
    zipfile.ZipFile(wheel).extractall(root)
    for name in ("gym", "gym.spaces", "d3rlpy", "d3rlpy.preprocessing"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["gym"].spaces = sys.modules["gym.spaces"]
    sys.modules["gym"].Env = sys.modules["gym"].Wrapper = object
    for attr in ("Box", "Discrete", "Space"):
        setattr(sys.modules["gym.spaces"], attr, object)
    sys.modules["d3rlpy.preprocessing"].ActionScaler = object
    for package in ("scope_rl", "scope_rl.ope", "scope_rl.ope.discrete"):  # not their __init__
        module = types.ModuleType(package)
        module.__path__ = [str(root / package.replace(".", "/"))]
        sys.modules[package] = module
    return importlib.import_module("scope_rl.ope.discrete.basic_estimators")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="scope_rl-0.2.1-py3-none-any.whl")
    options = parser.parse_args()
    from causalrec.ope.sequential import PDIS, WDR, WPDIS, SequentialDR

    spec = importlib.util.spec_from_file_location("mdp", REPO / "tests/ope/test_sequential.py")
    mdp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mdp)
    with tempfile.TemporaryDirectory() as root:
        scope = _load_scope_rl(options.wheel, Path(root))
        flat = mdp.arrays(*mdp.sample(2000, seed=11))
        q_hat = {"state_action_value_prediction": flat["state_action_value_prediction"]}
        print("| gamma | causalrec | SCOPE-RL | value | SCOPE-RL's | |difference| |")
        print("|---|---|---|---|---|---|")
        for gamma in (1.0, 0.9):
            theirs = {
                "step_per_trajectory": flat["step_per_episode"],
                "gamma": gamma,
                **{key: flat[key] for key in ("action", "reward", "pscore")},
                "evaluation_policy_action_dist": flat["evaluation_policy_action_dist"],
            }
            pairs = [
                (PDIS, scope.PerDecisionImportanceSampling, {}),
                (SequentialDR, scope.DoublyRobust, q_hat),
                (WPDIS, scope.SelfNormalizedPDIS, {}),
                (WDR, scope.SelfNormalizedDR, q_hat),
            ]
            for ours, reference, extra in pairs:
                mine = ours(gamma=gamma).estimate(**flat)
                other = reference().estimate_policy_value(**theirs, **extra)
                print(
                    f"| {gamma} | {ours.name} | {reference.__name__} | {mine:.12f} "
                    f"| {other:.12f} | {abs(mine - other):.1e} |"
                )


if __name__ == "__main__":
    main()
