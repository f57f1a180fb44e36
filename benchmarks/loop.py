"""The closed loop on every dynamic preset: what each retraining strategy does to its world.

Usage::

    python benchmarks/loop.py                       # the quick loop, then every preset (~17 min)
    python benchmarks/loop.py --presets quick quick_http --markdown /tmp/loop.md

``quick`` is ``configs/loop/quick.yaml`` as the README runs it (the ``feedback_loop`` world with
drifting interests, 2,000 users x 300 items, 5 steps per session). Every other preset runs the
same arms and interventions in that preset's world at the same size (2,000 users, 300 items,
5 steps per session); ``cap_popularity`` applies wherever the logger weighs popularity.
``quick_http`` is the quick loop with every retrained model served on Ray Serve over HTTP
(``serving.mode: http``); after ``quick`` in the same run it reports its wall time against the
in-process loop's and whether the deterministic arms' results are identical to it.

Runs on all the machine's cores (the goal: the quick loop within 10 minutes on 2 CPUs), so it
does not import the one-core harness. Prints, per preset: the wall time; per arm, the true
clicks per session in generation 0 and in the last generation, and the last generation's
long-tail share of impressions, catalogue coverage, Gini of exposure and interest
homogenisation (mean ± standard deviation over seeds); per intervention, its effect on the value
and on the long-tail share three ways. ``--figures`` copies the quick loop's figures.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

from causalrec.loop import LoopResult, load_loop_config, run_loop
from causalrec.loop.report import summarise
from causalrec.platform.config import config_dir

PRESETS = ("quick", "quick_http", "feedback_loop", "drift", "satiation", "retention")
#: Columns of the results that are measurements of the world (compared across serving modes).
MEASURED = ["generation", "truth", "realised", "clicks_per_session", "ctr", "tail_exposure",
            "coverage", "gini", "homogenisation", "impressions", "ope_next"]  # fmt: skip
SIZE = {"n_users": 2000, "n_items": 300, "session_length": 5}
LAST_COLUMNS = ("tail_exposure", "coverage", "gini", "homogenisation")


def _config(preset: str, path: Path):
    config = load_loop_config(path)
    if preset == "quick":
        return config
    if preset == "quick_http":
        return config.replace(serving={"mode": "http"})
    return config.replace(world={"preset": preset, "overrides": SIZE})


def _spread(frame: pd.DataFrame, column: str) -> str:
    values = frame[column].dropna()
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _arm_table(results: pd.DataFrame) -> list[str]:
    last = results.generation.max()
    lines = [
        "| arm | value, generation 0 | value, last | tail share of impressions | coverage | "
        "Gini of exposure | homogenisation |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, rows in results.groupby("arm", sort=False):
        first, final = rows[rows.generation == 0], rows[rows.generation == last]
        cells = [_spread(first, "truth"), _spread(final, "truth")]
        cells += [_spread(final, column) for column in LAST_COLUMNS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _effects_table(effects: pd.DataFrame, alpha: float) -> list[str]:
    lines = [
        "| intervention | metric | exact, first generation | A/B test | off-policy | "
        "exact, last generation |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    methods = ("exact, first generation", "A/B test", "off-policy", "exact, last generation")
    for (name, metric), rows in effects.groupby(["intervention", "metric"], sort=False):
        if metric not in ("truth", "tail_exposure"):
            continue
        cells = []
        for method in methods:
            values = rows[rows.method == method].assign(arm="-", generation=0)
            summary = summarise(values, "effect", alpha).iloc[0] if len(values) else None
            if summary is None or summary.n == 0:
                cells.append("n/a")
            elif summary.n < 2:
                cells.append(f"{summary['mean']:.3f}")
            else:
                cells.append(f"{summary['mean']:.3f} [{summary.low:.3f}, {summary.high:.3f}]")
        unit = "clicks per session" if metric == "truth" else "share"
        lines.append(f"| {name} | {metric} ({unit}) | " + " | ".join(cells) + " |")
    return lines


def _against_in_process(http: LoopResult, in_process: LoopResult) -> list[str]:
    """Wall time over HTTP against in process, and which arms gave identical results."""
    same, differ = [], []
    for arm, rows in http.results.groupby("arm", sort=False):
        theirs = in_process.results[in_process.results.arm == arm]
        ours, theirs = (frame[MEASURED].reset_index(drop=True) for frame in (rows, theirs))
        (same if ours.equals(theirs) else differ).append(arm)
    served = http.results[http.results.served_via == "http"]
    return [
        f"Over HTTP: {len(served)} generations served by Ray Serve ({int(served.requests.sum())} "
        f"/recommend requests, {int(served.served_rows.sum())} impressions logged by /feedback); "
        f"wall time {http.seconds:.0f} s against {in_process.seconds:.0f} s in process "
        f"(ratio {http.seconds / in_process.seconds:.2f}). Identical to the in-process loop: "
        f"{', '.join(same) or 'none'}; different: {', '.join(differ) or 'none'}.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(config_dir() / "loop" / "quick.yaml"))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--out", default="runs/bench_loop")
    parser.add_argument("--markdown", default=None, help="also write the tables here")
    parser.add_argument("--figures", default=None, help="copy the quick loop's figures here")
    args = parser.parse_args()
    lines, finished = [], {}
    for preset in args.presets:
        config = _config(preset, Path(args.config))
        out = Path(args.out) / preset
        started = time.perf_counter()
        result = run_loop(config, out, overwrite=True)
        seconds = time.perf_counter() - started
        world = config.world
        block = [
            f"### {preset}: {world.preset} {world.overrides}",
            "",
            f"{len(config.seeds)} seeds x {len(config.arms) + len(config.interventions)} arms x "
            f"{config.generations + 1} generations in {seconds:.0f} s; values in clicks per "
            "session (rollout truth), mean ± sd over seeds; failures: "
            f"{len(result.failures)}",
            "",
            *_arm_table(result.results),
            "",
        ]
        if (out / "effects.csv").is_file():
            block += [*_effects_table(pd.read_csv(out / "effects.csv"), config.alpha), ""]
        finished[preset] = result
        if preset == "quick_http" and "quick" in finished:
            block += _against_in_process(result, finished["quick"])
        print("\n".join(block), flush=True)
        lines += block
        if preset == "quick" and args.figures:
            target = Path(args.figures)
            target.mkdir(parents=True, exist_ok=True)
            for name in ("truth", "tail_exposure", "coverage", "homogenisation"):
                shutil.copy(out / "figures" / f"{name}.png", target / f"loop_{name}.png")
    text = "\n".join(lines)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
