"""Is OffCEM's bias in ``ope_catalogue.py`` the estimator's or its reward model's?

Usage::

    python benchmarks/ope_catalogue_exact_q.py --items 100 --seeds 10

The world, target, clusters and logs of ``ope_catalogue.py`` (same seeds), evaluated through the
dense array contract with the simulator's exact expected reward q(x, a) as the reward model:
OffCEM with exact q, OffCEM with exact q plus a random offset per cluster (its cluster-level
part wrong, its within-cluster differences right), DR with exact q, and MIPS. Prints each
estimator's mean error against the exact value and its standard error over seeds, in clicks per
round. Dense (n_rounds, n_items) arrays: keep ``--items`` small.
"""

from __future__ import annotations

import argparse

import numpy as np

from causalrec.ope import DR, MIPS, OffCEM
from causalrec.ope.cluster_inputs import item_clusters_from_features
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.simulators.policy_spec import named_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--clusters", type=int, default=32)
    parser.add_argument("--policy", default="softmax:2")
    args = parser.parse_args()

    config = load_simulator_config(preset="confounded", n_items=args.items, n_users=args.users)
    simulator = ConfoundedRecSimulator(config)
    clusters = item_clusters_from_features(simulator.item_features, args.clusters, seed=0)
    p_e_a = np.eye(clusters.max() + 1)[clusters][:, :, None]
    errors: dict[str, list[float]] = {
        "mips": [],
        "offcem, exact q": [],
        "offcem, exact q + cluster offsets": [],
        "dr, exact q": [],
    }
    truth = None
    for seed in range(args.seeds):
        logs = generate_logs(simulator, n_rounds=args.rounds, seed=seed)
        target = named_policy(args.policy, logs=logs, world=simulator)
        if truth is None:
            truth = float(simulator.policy_value(target))
        users, rows = logs.user_id, np.arange(logs.n_rows)
        relevance = simulator.relevance(users)  # (n_rounds, n_items)
        examination = logs.expected_reward / relevance[rows, logs.item_id]  # K = 1: e_1
        q = relevance * examination[:, None]
        arrays = dict(
            reward=logs.click,
            action=logs.item_id,
            action_embed=clusters[logs.item_id][:, None],
            pi_b=simulator.logging_policy().action_distribution(users),
            action_dist=target.action_distribution(users),
            p_e_a=p_e_a,
        )
        offsets = np.random.default_rng(seed).uniform(-0.2, 0.2, size=clusters.max() + 1)
        estimates = {
            "mips": MIPS().estimate(**arrays),
            "offcem, exact q": OffCEM().estimate(**arrays, q_hat=q),
            "offcem, exact q + cluster offsets": OffCEM().estimate(
                **arrays, q_hat=q + offsets[clusters][None, :]
            ),
            "dr, exact q": DR().estimate(
                reward=logs.click,
                action=logs.item_id,
                pscore=logs.pscore,
                action_dist=arrays["action_dist"],
                q_hat=q,
            ),
        }
        for name, value in estimates.items():
            errors[name].append(value - truth)
    print(f"{args.items} items, {args.seeds} seeds, truth {truth:.5f} clicks per round")
    for name, values in errors.items():
        values = np.asarray(values)
        se = values.std(ddof=1) / np.sqrt(len(values))
        print(f"{name:36s} mean error {values.mean():+.4f} ± {se:.4f} clicks per round")


if __name__ == "__main__":
    main()
