"""An intervention's causal effect on every metric, three ways: exact, A/B test, off-policy.

For an intervention on arm B from generation g (:class:`~causalrec.loop.config.InterventionConfig`)
and each seed:

* **exact**: the intervened twin minus B's twin, same seed and random numbers, at generation g
  (the first one served with the intervention) and at the last generation (after the feedback
  loop has carried the intervention's effect through the world). Individual-level
  counterfactuals only a simulator has; the value is the rollout truth (clicks per session).
* **A/B test**: B's world as it stood before generation g, one generation in which a random
  ``ab_share`` of its users are served the intervened policy and the rest B's own policy (one
  world: the groups share the item popularity, as real A/B tests share a marketplace). Treated
  minus control on each metric; the value is the realised clicks per session, with its
  within-seed standard error (Welch: users as independent units, as an A/B test's analysis
  takes them, although under popularity feedback they share the world).
* **off-policy**: both policies estimated on B's log of generation g − 1 (the logs a team had
  before deciding), with the loop's sequential estimator: the value only (the log's clicks are
  the reward; exposure shares are not estimated).

Each method gives one number per seed; the table reports their mean and a Student-t interval
over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from causalrec.loop.arms import Deployment
from causalrec.loop.config import InterventionConfig, LoopConfig
from causalrec.loop.interventions import SplitPolicy, ab_assignment, apply_intervention
from causalrec.loop.metrics import METRICS, exposure_measures, long_tail_items
from causalrec.loop.world import LoopWorld, WorldState
from causalrec.platform import storage
from causalrec.platform.errors import DataError
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["METHODS", "ab_effect", "intervention_effects", "offline_effect"]

#: The methods of the effects table, in report order.
METHODS = ("exact, first generation", "A/B test", "off-policy", "exact, last generation")
_METRIC_COLUMNS = [m.column for m in METRICS]


def _exact(results: pd.DataFrame, intervention: InterventionConfig, generation: int):
    rows = results[results.generation == generation]
    treated = rows[rows.arm == intervention.name].set_index("seed")[_METRIC_COLUMNS]
    control = rows[rows.arm == intervention.arm].set_index("seed")[_METRIC_COLUMNS]
    return (treated - control).dropna(how="all")  # seeds where both twins finished


def ab_effect(
    simulator: ConfoundedRecSimulator,
    state: WorldState,
    control: Deployment,
    treatment: Deployment,
    *,
    share: float,
    seed: int,
    tail: np.ndarray,
) -> dict[str, float]:
    """Treated minus control over one generation of a world split between two policies.

    Args:
        simulator: The world.
        state: Where it stands (it is not changed).
        control: The untreated users' deployment.
        treatment: The treated users' deployment.
        share: Share of users treated.
        seed: The loop's seed (the generation's random numbers, and the split's).
        tail: Tail mask, shape (n_items,).

    Returns:
        One effect per metric of :data:`~causalrec.loop.metrics.METRICS` (``truth``: realised
        clicks per session), and ``truth_se``: the value's standard error over users (Welch).
    """
    treated = ab_assignment(simulator.n_users, share, seed, state.generation)
    world = LoopWorld(simulator, state.copy())
    split = SplitPolicy(control.policy, treatment.policy, treated, name="ab")
    run = world.run_generation(split, seed=seed)
    in_treatment = treated[run.log.user_id]
    effect = {}
    groups = []
    for group, rows in ((treated, in_treatment), (~treated, ~in_treatment)):
        measures = exposure_measures(
            run.log.item_id[rows], run.log.click[rows], tail, world.preferences()[group]
        )
        groups.append({"truth": float(run.returns[group].mean()), **measures})
    for column in _METRIC_COLUMNS:
        effect[column] = groups[0][column] - groups[1][column]
    effect["truth_se"] = float(
        np.sqrt(sum(run.returns[g].var(ddof=1) / g.sum() for g in (treated, ~treated)))
    )
    return effect


def offline_effect(
    logs, control: Deployment, treatment: Deployment, config: LoopConfig, seed: int
) -> float:
    """Estimated clicks per session of ``treatment`` minus ``control`` on ``logs``.

    NaN where the loop's estimator is undefined on the logs (no support for a weighted one).
    """
    from causalrec.ope.evaluate_sessions import evaluate_sessions

    values = []
    for deployment in (treatment, control):
        try:
            frame = evaluate_sessions(
                logs, deployment.policy, config.ope.estimator, seed=seed, warn=False
            )
        except DataError:
            return float("nan")
        values.append(float(frame.estimate.iloc[0]))
    return values[0] - values[1]


def _before(config: LoopConfig, out, intervention, seed, simulator, tail) -> dict[str, dict]:
    """The A/B and off-policy effects of ``intervention`` in one seed (empty if B failed)."""
    from causalrec.loop.runner import MODEL_DIR, WORLD_FILE, arm_deployment

    arm = config.arm(intervention.arm)
    g = intervention.from_generation
    directory = out / "runs" / f"seed={seed}" / arm.name
    previous = directory / f"gen-{g - 1:03d}"
    if not (previous / "record.json").is_file():
        return {}
    if arm.retrains and not (previous / MODEL_DIR).is_dir():
        return {}
    control = arm_deployment(arm, simulator, directory, g)
    treatment = apply_intervention(
        intervention,
        control,
        simulator,
        exploration=arm.exploration_spec(),
        head_share=config.head_share,
    )
    state = WorldState.load(previous / WORLD_FILE)
    ab = ab_effect(
        simulator, state, control, treatment, share=intervention.ab_share, seed=seed, tail=tail
    )
    logs = storage.read_logs(previous / storage.LOGS_SUBDIR)
    offline = {column: np.nan for column in _METRIC_COLUMNS}
    offline["truth"] = offline_effect(logs, control, treatment, config, seed)
    return {"A/B test": ab, "off-policy": offline}


def intervention_effects(
    config: LoopConfig,
    out,
    results: pd.DataFrame,
    worlds: dict[int, ConfoundedRecSimulator],
) -> pd.DataFrame:
    """Every intervention's effect per seed, method and metric (see the module docstring).

    Args:
        config: The loop.
        out: Its run directory (models, logs and world states of the base arms).
        results: The loop's results table.
        worlds: The world of each seed.

    Returns:
        Columns ``intervention``, ``arm``, ``from_generation``, ``method``, ``generation``,
        ``seed``, ``metric``, ``effect`` (in the metric's unit) and ``standard_error`` (the A/B
        test's value within its seed; NaN elsewhere).
    """
    from pathlib import Path

    out = Path(out)
    rows = []
    last = config.generations
    for intervention in config.interventions:
        g = intervention.from_generation
        per_method: dict[str, dict[int, dict[str, float]]] = {method: {} for method in METHODS}
        for method, generation in ((METHODS[0], g), (METHODS[3], last)):
            for seed, values in _exact(results, intervention, generation).iterrows():
                per_method[method][int(seed)] = values.to_dict()
        for seed, simulator in worlds.items():
            tail = long_tail_items(simulator.popularity, config.head_share)
            for method, values in _before(config, out, intervention, seed, simulator, tail).items():
                per_method[method][seed] = values
        for method, by_seed in per_method.items():
            generation = last if method == METHODS[3] else g
            for seed, values in by_seed.items():
                for metric in _METRIC_COLUMNS:
                    rows.append(
                        (intervention.name, intervention.arm, g, method, generation, seed,
                         metric, float(values[metric]),
                         float(values.get(f"{metric}_se", np.nan)))
                    )  # fmt: skip
    columns = ["intervention", "arm", "from_generation", "method", "generation", "seed",
               "metric", "effect", "standard_error"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
