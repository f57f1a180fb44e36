"""The loop's report: every metric against generation, one line per arm, with intervals over seeds.

Inputs: ``OUT/results.parquet`` (:func:`~causalrec.loop.runner.read_results`), ``OUT/loop.json``
(failures) and ``OUT/config.yaml``. Outputs: ``OUT/report.md``, ``OUT/report.html`` and
``OUT/figures/<metric>.png``. A line is the mean over seeds; its band and the tables' intervals
are Student-t intervals over the seeds (none with one seed). Values of ``truth`` are clicks per
session; shares, coverage, Gini and homogenisation have no unit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from causalrec.loop.metrics import METRICS, Metric
from causalrec.pipeline.figures import new_figure, save_figure
from causalrec.platform import document as doc
from causalrec.platform.document import format_interval, format_number
from causalrec.platform.errors import DataError
from causalrec.platform.storage import write_atomic

__all__ = ["summarise", "write_loop_report"]


def summarise(results: pd.DataFrame, column: str, alpha: float = 0.05) -> pd.DataFrame:
    """Mean of ``column`` over seeds per arm and generation, with a Student-t interval.

    Returns:
        Columns ``arm``, ``generation``, ``mean``, ``low``, ``high``, ``n`` (seeds); ``low`` and
        ``high`` are NaN with fewer than two seeds.
    """
    rows = []
    for (arm, generation), values in results.groupby(["arm", "generation"], sort=False)[column]:
        values = values.dropna().to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean()) if n else np.nan
        if n >= 2:
            half = stats.t.ppf(1 - alpha / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
        else:
            half = np.nan
        rows.append((arm, int(generation), mean, mean - half, mean + half, n))
    return pd.DataFrame(rows, columns=["arm", "generation", "mean", "low", "high", "n"])


def _plot(summary: pd.DataFrame, metric: Metric, path: Path) -> Path:
    fig = new_figure()
    ax = fig.subplots()
    for arm, lines in summary.groupby("arm", sort=False):
        lines = lines.sort_values("generation")
        (line,) = ax.plot(lines.generation, lines["mean"], marker="o", label=arm)
        if lines["low"].notna().any():
            ax.fill_between(
                lines.generation, lines["low"], lines["high"], alpha=0.15, color=line.get_color()
            )
    ax.set_xlabel("generation (0: the world's logger in every arm)")
    ax.set_ylabel(metric.unit)
    ax.set_title(metric.label, fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _final_table(results: pd.DataFrame, alpha: float) -> doc.Table:
    last = results.generation.max()
    columns = ["arm", *(f"{m.column} ({m.unit})" for m in METRICS)]
    cells = {}
    for metric in METRICS:
        summary = summarise(results[results.generation == last], metric.column, alpha)
        for row in summary.itertuples():
            cells[(row.arm, metric.column)] = format_interval(row.mean, row.low, row.high)
    arms = list(dict.fromkeys(results.arm))
    rows = tuple((arm, *(cells.get((arm, m.column), "n/a") for m in METRICS)) for arm in arms)
    return doc.Table(tuple(columns), rows)


def _ope_table(results: pd.DataFrame) -> doc.Table | None:
    if "ope_next" not in results:
        return None
    scored = results.dropna(subset=["ope_next", "next_truth"])
    if scored.empty:
        return None
    rows = []
    for arm, group in scored.groupby("arm", sort=False):
        truth = group.next_truth
        inside = (group.ope_next_low <= truth) & (truth <= group.ope_next_high)
        rows.append(
            (
                arm,
                str(group.ope_estimator.iloc[0]),
                str(len(group)),
                format_number(float(group.ope_error.mean())),
                format_number(float((group.ope_error / group.next_truth).abs().mean())),
                format_number(float(inside.mean())),
                format_number(float(group.ope_next_ess_share.median())),
            )
        )
    columns = ("arm", "estimator", "models", "mean error", "mean |relative error|",
               "interval coverage", "median ESS share")  # fmt: skip
    return doc.Table(columns, tuple(rows))


def _effects_tables(effects: pd.DataFrame, alpha: float) -> list[doc.Block]:
    """One table per intervention: metrics down, the three ways of measuring across."""
    from causalrec.loop.effects import METHODS

    blocks: list[doc.Block] = []
    for name, group in effects.groupby("intervention", sort=False):
        first = group.iloc[0]
        blocks.append(
            doc.Paragraph(
                f"{name}: on arm {first['arm']} from generation {first['from_generation']}. "
                "Effects are intervened minus not intervened, means over seeds with "
                f"{100 * (1 - alpha):.0f}% intervals."
            )
        )
        cells = {}
        for (method, metric), values in group.groupby(["method", "metric"], sort=False):
            summary = summarise(
                values.assign(arm="-", generation=0, value=values.effect), "value", alpha
            ).iloc[0]
            cells[(method, metric)] = (
                "n/a"
                if summary.n == 0
                else format_interval(summary["mean"], summary.low, summary.high)
            )
        rows = tuple(
            (f"{m.label} ({m.unit})", *(cells.get((method, m.column), "n/a") for method in METHODS))
            for m in METRICS
        )
        blocks.append(doc.Table(("metric", *METHODS), rows))
        blocks.append(_ab_within_seed(group, alpha))
    return blocks


def _ab_within_seed(effects: pd.DataFrame, alpha: float) -> doc.Table:
    """Per seed: the A/B test's value effect with its within-seed interval, and the exact one."""
    from causalrec.loop.effects import METHODS

    value = effects[effects.metric == "truth"]
    ab = value[value.method == "A/B test"].set_index("seed")
    exact = value[value.method == METHODS[0]].set_index("seed").effect
    z = stats.norm.ppf(1 - alpha / 2)
    rows = []
    for seed, row in ab.iterrows():
        low, high = row.effect - z * row.standard_error, row.effect + z * row.standard_error
        truth = exact.get(seed, np.nan)
        covered = "n/a" if np.isnan(truth) else ("yes" if low <= truth <= high else "no")
        rows.append(
            (str(seed), format_interval(row.effect, low, high), format_number(truth), covered)
        )
    columns = (
        "seed",
        f"A/B test, value ({100 * (1 - alpha):.0f}% interval within the seed)",
        "exact, first generation",
        "exact inside",
    )
    return doc.Table(columns, tuple(rows))


def write_loop_report(out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the figures of the loop run in ``out``.

    Returns:
        ``{"markdown": ..., "html": ..., **figures}``.

    Raises:
        DataError: If ``out`` holds no loop run.
    """
    out = Path(out)
    if not (out / "loop.json").is_file():
        raise DataError(f"{str(out)!r} holds no loop run (loop.json missing)")
    state = json.loads((out / "loop.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    alpha = float(config.get("alpha", 0.05))
    results_path = out / "results.parquet"
    results = pd.read_parquet(results_path) if results_path.is_file() else pd.DataFrame()
    blocks: list[doc.Block] = [doc.Heading("Closed loop: serve, feedback, retrain, redeploy", 1)]
    world = config["world"]
    blocks.append(
        doc.Paragraph(
            f"World: preset {world['preset']} with overrides {world['overrides'] or 'none'}; "
            f"seeds {state['seeds']}; generations 0..{state['generations']} (generation 0 serves "
            "the world's logger in every arm). Each arm runs in a twin world with the same seed "
            "and common random numbers. Lines are means over seeds, bands and intervals are "
            f"{100 * (1 - alpha):.0f}% Student-t intervals over seeds."
        )
    )
    for failure in state.get("failures", []):
        blocks.append(
            doc.Notice(
                f"seed {failure['seed']}, arm {failure['arm']}: generation "
                f"{failure['generation']} failed ({failure['error']}); the arm stops there."
            )
        )
    figures: dict[str, Path] = {}
    if results.empty:
        blocks.append(doc.Notice("No generation finished: no results to report."))
    else:
        blocks.append(doc.Heading("Last generation"))
        blocks.append(_final_table(results, alpha))
        ope = _ope_table(results)
        blocks.append(doc.Heading("Off-policy estimate of each next model, before it is deployed"))
        if ope is None:
            blocks.append(doc.Notice("No retraining arm produced an estimate."))
        else:
            blocks.append(
                doc.Paragraph(
                    "Each retrained model is estimated on the generation's session log (clicks "
                    "per session) and compared with its rollout truth once deployed."
                )
            )
            blocks.append(ope)
        effects_path = out / "effects.csv"
        if effects_path.is_file():
            blocks.append(doc.Heading("Interventions: exact, A/B test and off-policy effects"))
            blocks.append(
                doc.Paragraph(
                    "Exact: the intervened twin world minus the arm's own twin (same random "
                    "numbers), at the first generation served with the intervention and at the "
                    "last. A/B test: one generation of the arm's world with a random share of "
                    "users treated (value: realised clicks per session). Off-policy: both "
                    "policies estimated on the arm's log of the generation before (value only)."
                )
            )
            blocks.extend(_effects_tables(pd.read_csv(effects_path), alpha))
        blocks.append(doc.Heading("Metrics by generation"))
        for metric in METRICS:
            summary = summarise(results, metric.column, alpha)
            path = _plot(summary, metric, out / "figures" / f"{metric.column}.png")
            figures[metric.column] = path
            blocks.append(doc.Image(f"figures/{path.name}", f"{metric.label} ({metric.unit})"))
    markdown, html = out / "report.md", out / "report.html"
    text_md = doc.to_markdown(blocks)
    text_html = doc.to_html(blocks, title="causalrec closed loop")
    write_atomic(markdown, lambda tmp: tmp.write_text(text_md, encoding="utf-8"))
    write_atomic(html, lambda tmp: tmp.write_text(text_html, encoding="utf-8"))
    return {"markdown": markdown, "html": html, **figures}
