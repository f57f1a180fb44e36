"""``causalrec simulate`` and ``causalrec graph``: logged feedback and the causal graph."""

from __future__ import annotations

import argparse
import json
import time

from causalrec.platform.cli_config import add_config_overrides, collect_overrides
from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import list_presets
from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import check_output_dir
from causalrec.simulators.config import SimulatorConfig, load_simulator_config
from causalrec.simulators.logs import CHUNK_ROUNDS, LogSummary, write_logs
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.simulators.session_logs import SessionLogSummary, write_session_logs

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the simulator's subcommands."""
    simulate = subparsers.add_parser(
        "simulate",
        help="simulate confounded logged feedback and write it as Parquet",
        description=(
            "Simulate rounds of a recommender with confounded exposure and write one row per "
            "impression (exact propensities, ground-truth expected reward) as a Parquet dataset "
            "in OUT, with user/item feature tables and summary.json. Prints a summary: rows, "
            "CTR, exact value of the logging policy and of the oracle, inverse-propensity "
            "statistics and effective sample size."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    _add_world_arguments(simulate)
    length = simulate.add_mutually_exclusive_group(required=True)
    length.add_argument("--rounds", type=int, help="number of rounds (independent requests)")
    length.add_argument(
        "--sessions",
        type=int,
        help=(
            "number of whole sessions of session_length steps (dynamic worlds: users drift, "
            "tire and leave); the log has session_id, step and timestamp"
        ),
    )
    simulate.add_argument("--out", required=True, help="output directory (must be empty or new)")
    simulate.add_argument(
        "--seed", type=int, default=None, help="seed of the log draws (default: the world seed)"
    )
    simulate.add_argument(
        "--policy",
        default="logging",
        help=(
            "policy that logs: a saved model directory, or a policy spec (logging, oracle, "
            "uniform, softmax:T, epsilon_greedy:E)"
        ),
    )
    simulate.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    simulate.add_argument(
        "--workers",
        type=int,
        default=None,
        help=(
            "shards simulated at once: 0 in this process, N >= 1 as Ray tasks (a local Ray, or "
            "the cluster of --address / RAY_ADDRESS); default: every CPU of the cluster when one "
            "is named, this process otherwise. The log is bit-identical either way (--rounds)"
        ),
    )
    simulate.add_argument(
        "--chunk-rounds",
        type=int,
        default=CHUNK_ROUNDS,
        help="rounds per shard; part of the seeding scheme, so changing it changes the draws",
    )
    simulate.add_argument(
        "--address", default=None, help="Ray cluster to run the shards on (or RAY_ADDRESS)"
    )
    simulate.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object"
    )
    simulate.set_defaults(handler=run_simulate)

    graph = subparsers.add_parser(
        "graph",
        help="print the simulator's causal graph (Mermaid or JSON)",
        description="Print the structural causal model of a simulator preset or config.",
        formatter_class=DefaultsHelpFormatter,
    )
    _add_world_arguments(graph)
    graph.add_argument("--json", action="store_true", help="print nodes and edges as JSON")
    graph.set_defaults(handler=run_graph)


def _add_world_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        default=None,
        help=f"simulator preset: one of {', '.join(list_presets('simulators'))} (default: default)",
    )
    source.add_argument("--config", default=None, help="YAML file with SimulatorConfig fields")
    add_config_overrides(
        parser, SimulatorConfig, title="simulator overrides", rename={"seed": "world_seed"}
    )


def _load_config(args: argparse.Namespace) -> SimulatorConfig:
    return load_simulator_config(
        preset=args.preset, path=args.config, **collect_overrides(args, SimulatorConfig)
    )


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``causalrec simulate``."""
    for flag in ("rounds", "sessions"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be >= 1; got {value}")
    # The CLI is an entrypoint (platform.cli registers every command): it may resolve a saved
    # model directory, which the simulators library itself never imports.
    from causalrec.methods.policy_spec import resolve_policy

    config = _load_config(args)
    check_output_dir(args.out, overwrite=args.overwrite, uri=True)  # before any work
    started = time.perf_counter()
    simulator = ConfoundedRecSimulator(config)
    seed = config.seed if args.seed is None else args.seed
    common = {"seed": seed, "overwrite": args.overwrite, "progress": not args.json}
    if args.sessions is not None:
        for flag, value in (("workers", args.workers), ("address", args.address)):
            if value is not None:
                raise ConfigError(
                    f"--{flag}: session logs (--sessions) are simulated in this process; got "
                    f"{value!r}"
                )
        # The world's logger acts on sessions (it follows the cohort's popularity).
        if args.policy == "logging":
            policy = simulator.session_logging_policy()
        else:
            policy = resolve_policy(args.policy, world=simulator).policy
        summary = write_session_logs(simulator, args.out, args.sessions, policy=policy, **common)
        formatter = _format_session_summary
    else:
        policy = resolve_policy(args.policy, world=simulator).policy
        summary = write_logs(
            simulator, args.out, args.rounds, policy=policy, workers=args.workers,
            address=args.address, chunk_rounds=args.chunk_rounds, **common,
        )  # fmt: skip
        formatter = _format_summary
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**summary.to_dict(), "out": str(args.out), "seconds": round(elapsed, 3)}))
    else:
        print(formatter(summary, args.out, policy.name, elapsed))
    return 0


def _table(out: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"wrote {out}"] + [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _format_session_summary(
    summary: SessionLogSummary, out: str, policy: str, elapsed: float
) -> str:
    value = f"{summary.logger_long_term_value:.4f} ± {summary.logger_long_term_se:.4f}"
    return _table(
        out,
        [
            ("sessions", f"{summary.sessions:,}"),
            ("rounds (steps)", f"{summary.rounds:,}"),
            ("rows (impressions)", f"{summary.rows:,}"),
            ("steps per session", f"{summary.mean_session_steps:.2f}"),
            ("clicks per session (observed)", f"{summary.clicks_per_session:.4f}"),
            ("CTR (clicks / impression)", f"{summary.ctr:.4f}"),
            (f"long-term value of '{policy}' (clicks / session, rollouts ± SE)", value),
            ("Parquet files", f"{summary.files}"),
            ("seconds", f"{elapsed:.2f}"),
        ],
    )


def _format_summary(summary: LogSummary, out: str, policy: str, elapsed: float) -> str:
    return _table(
        out,
        [
            ("rows (impressions)", f"{summary.rows:,}"),
            ("rounds", f"{summary.rounds:,}"),
            ("CTR (clicks / impression)", f"{summary.ctr:.4f}"),
            (f"exact value of '{policy}' (clicks / round)", f"{summary.logging_policy_value:.4f}"),
            ("exact oracle value (clicks / round)", f"{summary.oracle_value:.4f}"),
            ("mean 1 / pscore", f"{summary.mean_inverse_pscore:,.1f}"),
            ("max 1 / pscore", f"{summary.max_inverse_pscore:,.1f}"),
            ("effective sample size", f"{summary.effective_sample_size:,.0f}"),
            ("Parquet files", f"{summary.files}"),
            ("shards", f"{summary.shards} ({_where(summary.nodes)})"),
            ("seconds", f"{elapsed:.2f}"),
        ],
    )


def _where(nodes: int) -> str:
    if nodes == 0:
        return "in this process"
    return f"Ray tasks on {nodes} node{'s' if nodes > 1 else ''}"


def run_graph(args: argparse.Namespace) -> int:
    """Handler of ``causalrec graph``."""
    graph = ConfoundedRecSimulator(_load_config(args)).causal_graph()
    print(json.dumps(graph.to_dict(), indent=2) if args.json else graph.to_mermaid())
    return 0
