"""Why the loop's off-policy estimate of the next model misses its realised value: a decomposition.

Usage::

    python benchmarks/loop.py --presets quick          # writes runs/bench_loop/quick
    python benchmarks/loop_ope.py --run runs/bench_loop/quick

For each retraining arm, seed and generation g < G of a finished loop, the record holds
``ope_next``: sequential DR of the model retrained after g (model_g), estimated on generation g's
own log, and ``next_truth``: model_g's rollout truth from where the world stands when it is
deployed (after generation g). Their difference splits, exactly, into three parts:

* **in-sample optimism** = ``ope_next`` − DR of model_g on a *fresh* log: the same deployed
  policy and world state as generation g, other random numbers (model_g was trained on the very
  log that estimates it);
* **estimator bias** = fresh DR − model_g's truth from the world state *of* generation g (the
  state the fresh log was drawn from);
* **world moved** = that truth − ``next_truth`` (generation g changed the users' interests and
  the items' popularity before model_g was deployed).

Prints the mean and standard deviation of each part over seeds and generations, per arm, in
clicks per session, and the error without the in-sample part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from causalrec.loop.arms import model_deployment
from causalrec.loop.config import LoopConfig, load_loop_config
from causalrec.loop.runner import (
    MODEL_DIR,
    WORLD_FILE,
    _world,
    arm_deployment,
    read_results,
)
from causalrec.loop.world import LoopWorld, WorldState
from causalrec.ope.evaluate_sessions import evaluate_sessions
from causalrec.platform.errors import DataError

#: Offset of the fresh log's seed (its draws are independent of the generation's).
FRESH_SEED_OFFSET = 10_000


def _state_before(directory: Path, generation: int, simulator) -> WorldState:
    if generation == 0:
        return WorldState.initial(simulator)
    return WorldState.load(directory / f"gen-{generation - 1:03d}" / WORLD_FILE)


def _decompose(config: LoopConfig, run: Path, results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    arms = [arm.name for arm in config.arms if arm.retrains]  # not the intervened twins
    retrained = results[
        results.arm.isin(arms) & results.ope_next.notna() & results.next_truth.notna()
    ]
    for record in retrained.itertuples():
        arm = config.arm(record.arm)
        simulator = _world(config, record.seed)
        directory = run / "runs" / f"seed={record.seed}" / record.arm
        deployed = arm_deployment(arm, simulator, directory, record.generation)
        model = model_deployment(
            arm, directory / f"gen-{record.generation:03d}" / MODEL_DIR, simulator.slate_size
        )
        state = _state_before(directory, record.generation, simulator)
        world = LoopWorld(simulator, state.copy())
        fresh = world.run_generation(deployed.policy, seed=record.seed + FRESH_SEED_OFFSET).log
        try:
            fresh_dr = float(
                evaluate_sessions(
                    fresh,
                    model.policy,
                    config.ope.estimator,
                    horizon=simulator.config.session_length,
                    seed=record.seed,
                    warn=False,
                ).iloc[0]["estimate"]
            )
        except DataError:
            fresh_dr = float("nan")
        same_state = LoopWorld(simulator, state.copy()).long_term_value(
            model.policy, seed=record.seed, replicas=config.truth_replicas
        )
        rows.append(
            {
                "arm": record.arm,
                "seed": record.seed,
                "generation": record.generation,
                "error": record.ope_next - record.next_truth,
                "in_sample_optimism": record.ope_next - fresh_dr,
                "estimator_bias": fresh_dr - float(same_state),
                "world_moved": float(same_state) - record.next_truth,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/bench_loop/quick", help="a finished loop run")
    args = parser.parse_args()
    run = Path(args.run)
    config = load_loop_config(run / "config.yaml")
    parts = _decompose(config, run, read_results(run))
    columns = ["error", "in_sample_optimism", "estimator_bias", "world_moved"]
    print(
        f"{len(parts)} models ({parts.seed.nunique()} seeds); clicks per session, "
        "mean ± sd over seeds and generations"
    )
    print("| arm | error (ope_next - next_truth) | in-sample optimism | estimator bias | "
          "world moved | error with a fresh log |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for arm, rows in parts.groupby("arm", sort=False):
        rows = rows.assign(fresh_error=rows.estimator_bias + rows.world_moved)
        cells = [
            f"{rows[c].mean():+.3f} ± {rows[c].std(ddof=1):.3f}" for c in [*columns, "fresh_error"]
        ]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    check = parts[columns[1:]].sum(axis=1) - parts["error"]
    assert np.allclose(check.dropna(), 0, atol=1e-9), "the parts must add up to the error"


if __name__ == "__main__":
    main()
