"""The report's sections: validated run-directory inputs in, document blocks and figures out.

Each section reads the inputs it needs from :class:`Context`; when one is missing it emits a
:class:`~causalrec.platform.document.Notice` naming the stage that should have written it
(with that stage's status and error from ``pipeline.json``) instead of failing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from causalrec.pipeline import figures as fig
from causalrec.pipeline._inputs import PRODUCER, number
from causalrec.platform import document as doc
from causalrec.platform.document import format_interval, format_number, format_p_value
from causalrec.platform.errors import DataError

__all__ = ["FIGURES", "Context", "build", "title"]

FIGURES = ("value_vs_ope", "regret", "ope_error", "sensitivity", "ab_lift", "causal_graph")
_MAX_ERROR_CHARS = 500


def _short(text: Any) -> str:
    """One line of at most ``_MAX_ERROR_CHARS`` characters (a traceback gives its last line)."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):
        lines = lines[-1:]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


@dataclass
class Context:
    """The validated inputs (``None`` where missing) and the figures drawn so far."""

    inputs: dict[str, Any]
    figures_dir: Path
    figures: dict[str, Path] = field(default_factory=dict)

    def unavailable(self, name: str) -> doc.Notice:
        """The note shown instead of a section whose input ``name`` is missing."""
        stage, details = PRODUCER[name], [f"{name} is missing"]
        stages = (self.inputs["pipeline.json"] or {}).get("stages", [])
        record = next((s for s in stages if s["name"] == stage), None)
        if record is not None:
            details.append(f"stage status: {record['status']}")
            if record.get("error"):
                details.append(f"error: {_short(record['error'])}")
        return doc.Notice(f"Not available: stage {stage} did not complete ({'; '.join(details)}).")

    def figure(self, name: str, caption: str, draw: Callable[..., Path], *args, **kw) -> doc.Image:
        """Draw figure ``name`` with ``draw(*args, path, **kw)`` and return its image block."""
        self.figures[name] = draw(*args, self.figures_dir / f"{name}.png", **kw)
        return doc.Image(f"figures/{name}.png", caption)


def title(inputs: dict[str, Any]) -> str:
    """The report's title."""
    summary = inputs["summary.json"]
    return "causalrec pipeline report" + (f": {summary['preset']}" if summary else "")


def _run(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading(title(ctx.inputs), 1), doc.Heading("Run")]
    summary, pipeline, rows = ctx.inputs["summary.json"], ctx.inputs["pipeline.json"], []
    if summary is None:
        blocks.append(ctx.unavailable("summary.json"))
    else:
        sizes = {"Users": "n_users", "Items": "n_items", "Slate size": "slate_size"}
        sizes |= {"Logged rounds": "n_rounds", "Uniform rounds": "uniform_rounds"}
        rows += [("Preset", summary["preset"])]
        rows += [(label, f"{int(summary[key]):,}") for label, key in sizes.items()]
        rows += [
            (f"{who.capitalize()} value (clicks per round)", format_number(summary[f"{who}_value"]))
            for who in ("oracle", "logging")
        ]
    if pipeline is None:
        blocks.append(doc.Notice("Not available: pipeline.json is missing (no stage record)."))
    else:
        rows += [
            ("Seed", str(pipeline["seed"])),
            ("Config", pipeline["config_path"] or "given in Python (see pipeline.json)"),
            ("Started", pipeline["started"]),
            ("Finished", pipeline["finished"] or "not finished"),
        ]
        try:
            elapsed = datetime.fromisoformat(pipeline["finished"]) - datetime.fromisoformat(
                pipeline["started"]
            )
            rows.append(("Wall time", f"{elapsed.total_seconds():.1f} s"))
        except (TypeError, ValueError):
            pass  # unfinished, or times that do not parse: the raw strings are shown above
    if rows:
        blocks.append(doc.Table(("Field", "Value"), tuple(rows)))
    blocks.append(doc.Heading("Stages"))
    if pipeline is not None:
        stages = tuple(
            (
                s["name"],
                s["status"],
                "n/a" if s["seconds"] is None else f"{s['seconds']:.1f}",
                _short(s["error"] or ""),
            )
            for s in pipeline["stages"]
        )
        blocks.append(doc.Table(("Stage", "Status", "Seconds", "Error"), stages))
    return blocks


def _headline(ope: pd.DataFrame | None) -> tuple[str, pd.DataFrame]:
    """The estimator shown per candidate (``dr``, else the first listed) and its rows."""
    if ope is None or ope.empty:
        return "dr", pd.DataFrame(columns=["candidate", "estimate", "low", "high"], dtype=float)
    name = "dr" if (ope["estimator"] == "dr").any() else str(ope["estimator"].iloc[0])
    rows = ope[ope["estimator"] == name].drop_duplicates("candidate")
    return name, rows[["candidate", "estimate", "low", "high"]]


def _policies(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("Policies: exact value vs. off-policy estimate")]
    candidates, ope, summary = (
        ctx.inputs[k] for k in ("candidates.csv", "ope.csv", "summary.json")
    )
    if candidates is None:
        return [*blocks, ctx.unavailable("candidates.csv")]
    if ope is None:
        blocks.append(ctx.unavailable("ope.csv"))
    estimator, headline = _headline(ope)
    merged = candidates.merge(headline.astype({"candidate": str}), on="candidate", how="left")
    rows = tuple(
        (
            r.candidate,
            r.method,
            r.trial_id,
            format_number(r.true_value),
            format_interval(r.estimate, r.low, r.high),
            format_number(r.regret),
            "yes" if r.selected else "",
        )
        for r in merged.itertuples()
    )
    columns = ("Candidate", "Method", "Trial", "Exact value")
    columns += (f"OPE estimate ({estimator}) [low, high]", "Regret", "Selected")
    blocks.append(doc.Table(columns, rows))
    blocks.append(doc.Paragraph("Values in clicks per round; regret is oracle minus exact value."))
    if merged["estimate"].notna().any():
        refs = {
            f"{k}_value": number(summary[f"{k}_value"]) if summary else math.nan
            for k in ("oracle", "logging")
        }
        caption = f"Exact value vs. {estimator} estimate"
        draw = fig.plot_value_vs_ope
        blocks.append(
            ctx.figure("value_vs_ope", caption, draw, merged, estimator=estimator, **refs)
        )
    if not candidates.empty:
        blocks.append(ctx.figure("regret", "Regret to the oracle", fig.plot_regret, candidates))
    return blocks


def _selection(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("Selection")]
    summary, candidates = ctx.inputs["summary.json"], ctx.inputs["candidates.csv"]
    if summary is None:
        return [*blocks, ctx.unavailable("summary.json")]
    selected, best = summary["selected"], summary["truly_best"]
    if selected is None:
        blocks.append(
            doc.Notice("Not available: no candidate was selected (see stages tune, ope).")
        )
    rows = tuple(
        (
            role,
            entry["candidate"],
            entry["method"],
            format_number(entry["true_value"]),
            format_number(entry.get("ope_dr")) if entry is selected else "",
        )
        for role, entry in (("selected by OPE", selected), ("truly best", best))
        if entry
    )
    if rows:
        columns = ("Role", "Candidate", "Method", "Exact value", "DR estimate")
        blocks.append(doc.Table(columns, rows))
    if summary["selection_regret"] is not None:
        blocks.append(
            doc.Paragraph(
                "Selection regret (exact value of the truly best minus the selected): "
                f"{format_number(summary['selection_regret'])} clicks per round."
            )
        )
    rules = summary.get("selection_rules")
    if isinstance(rules, dict) and rules:
        blocks.append(
            doc.Paragraph(
                "What each selection rule would have chosen among the trials (the search "
                f"selected by {summary.get('selection_metric', 'ope_dr')}; ope_auto: the "
                "estimator off-policy cross-validation chose per candidate; _low: the lower "
                "end of the 95% interval, a risk-averse rule). Values in clicks per round."
            )
        )
        blocks.append(
            doc.Table(
                ("Rule", "Method", "Rule's value", "Exact value", "Regret"),
                tuple(
                    (
                        rule,
                        str(choice.get("method", "")),
                        format_number(choice.get("value")),
                        format_number(choice.get("true_value")),
                        format_number(choice.get("regret")),
                    )
                    for rule, choice in rules.items()
                ),
            )
        )
    if selected and candidates is not None:
        params = candidates.loc[candidates["candidate"] == selected["candidate"], "params"]
        if len(params):
            try:
                values = json.loads(params.iloc[0] or "{}")
            except json.JSONDecodeError as error:
                raise DataError(f"candidates.csv: column 'params' is not JSON ({error})") from error
            text = ", ".join(f"{k}={v}" for k, v in values.items()) if values else "defaults"
            blocks.append(doc.Paragraph(f"Hyperparameters of the selected candidate: {text}."))
    return blocks


def _ope_errors(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("OPE error by estimator")]
    ope = ctx.inputs["ope.csv"]
    if ope is None:
        return [*blocks, ctx.unavailable("ope.csv")]
    blocks.append(doc.Heading("On the held-out rounds of the confounded log", level=3))
    blocks += _error_table(ope)
    if np.isfinite(ope["error"].to_numpy()).any():
        blocks.append(ctx.figure("ope_error", "OPE error by estimator", fig.plot_ope_error, ope))
    uniform = ctx.inputs.get("ope_uniform.csv")
    if uniform is not None:
        blocks.append(doc.Heading("On the uniform-random slice (full overlap)", level=3))
        blocks += _error_table(uniform)
    return blocks


def _error_table(ope: pd.DataFrame) -> list[doc.Block]:
    """Per estimator: error statistics and coverage across candidates."""
    rows, mae = [], {}
    for name, group in ope.groupby("estimator", sort=False):
        error = group["error"].to_numpy()[np.isfinite(group["error"].to_numpy())]
        low, high, true = (group[c].to_numpy() for c in ("low", "high", "true_value"))
        known = np.isfinite(low) & np.isfinite(high) & np.isfinite(true)
        covered = int(((low <= true) & (true <= high) & known).sum())
        stats = (
            [np.abs(error).mean(), np.sqrt((error**2).mean()), error.mean()] if error.size else []
        )
        mae[name] = float(stats[0]) if stats else math.nan
        rows.append(
            (
                str(name),
                str(len(group)),
                *(format_number(s) for s in stats or [None] * 3),
                f"{covered}/{int(known.sum())}" if known.any() else "n/a",
                str(int((group["warning"].str.strip() != "").sum())),
            )
        )
    columns = ("Estimator", "Candidates", "Mean abs error", "RMSE", "Mean error")
    columns += ("Coverage of true value", "Warnings")
    blocks: list[doc.Block] = [doc.Table(columns, tuple(rows))]
    finite = {name: value for name, value in mae.items() if math.isfinite(value)}
    if finite:
        best = min(finite, key=finite.__getitem__)
        blocks.append(
            doc.Paragraph(
                "Error is estimate minus exact value, in clicks per round; coverage counts the "
                "candidates whose exact value lies in [low, high]. Lowest mean absolute error: "
                f"{best} ({format_number(finite[best])})."
            )
        )
    return blocks


def _sensitivity(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("Sensitivity to hidden confounding")]
    data = ctx.inputs["sensitivity.json"]
    if data is None:
        return [*blocks, ctx.unavailable("sensitivity.json")]
    curve = pd.DataFrame(data["curve"])
    truth, level = number(data["true_value"]), f"{1 - data['alpha']:.0%}"
    blocks.append(
        doc.Paragraph(
            f"Bounds on the value of the selected candidate {data['candidate']} if the "
            f"propensities ({data['pscore']}) were off by up to a factor Γ in odds (marginal "
            f"sensitivity model): sharp bounds of the {data['estimator']} estimate on the "
            f"{data['n_rounds']:,} held-out rounds, and their {level} percentile-bootstrap "
            f"widening ({data['n_bootstrap']} resamples of rounds). Γ = 1 is the point "
            f"estimate; values in clicks per round; exact value {format_number(truth)}."
        )
    )
    rows = tuple(
        (
            f"{p.gamma:g}",
            f"[{format_number(p.lower)}, {format_number(p.upper)}]",
            f"[{format_number(p.lower_bootstrap)}, {format_number(p.upper_bootstrap)}]",
            "yes" if p.lower_bootstrap <= truth <= p.upper_bootstrap else "no",
        )
        for p in curve.itertuples()
    )
    columns = ("Γ", "Bounds [lower, upper]", f"With sampling uncertainty ({level})")
    blocks.append(doc.Table((*columns, "Contains exact value"), rows))
    true_gamma = data["true_gamma"]
    if true_gamma is None:
        text = "This world's true Γ was not computed (hidden confounding with slates)."
    elif true_gamma["exact"]:
        text = (
            f"This world's true Γ is {true_gamma['gamma']:g} (exact): no hidden confounding "
            "reaches the logger, so propensities given the observed features are the logged ones."
        )
    else:
        text = (
            f"This world's true Γ is {format_number(true_gamma['gamma'])} (standard error "
            f"{format_number(true_gamma['standard_error'])}, quasi-Monte Carlo): the largest odds "
            "ratio between the logger's propensities (what the log records) and those given the "
            "observed features alone (the best an analyst without the logged ones could have)."
        )
    blocks.append(doc.Paragraph(text))
    gamma = number(true_gamma["gamma"]) if true_gamma else math.nan
    caption = "Bounds on the selected policy's value against Γ"
    draw = fig.plot_sensitivity
    blocks.append(
        ctx.figure("sensitivity", caption, draw, curve, true_value=truth, true_gamma=gamma)
    )
    return blocks


def _abtest(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("A/B test: online vs. offline")]
    result = ctx.inputs["abtest/result.json"]
    if result is None:
        return [*blocks, ctx.unavailable("abtest/result.json")]
    online, offline, agree = result["online"], result["offline"], result["agreement"]
    alpha, significant = result["alpha"], online["p_value"] < result["alpha"]
    blocks.append(
        doc.Paragraph(
            f"{result['users']:,} simulated visits, {result['mode']} mode, seed {result['seed']}. "
            f"Lift is arm B minus arm A in clicks per visit; the online lift is "
            f"{'' if significant else 'not '}significant at alpha = {alpha:g}."
        )
    )
    if result.get("identical_arms"):
        blocks.append(
            doc.Notice(
                "A/A test: both arms serve the same model, so the exact and offline lifts are 0 "
                "by construction and 'same sign' cannot hold; the online lift measures noise."
            )
        )
    off_name = offline["estimator"] if offline else "OPE"
    comparison = {
        "Online lift [low, high]": format_interval(online["lift"], online["low"], online["high"]),
        "p-value": format_p_value(online["p_value"]),
        "MDE": format_number(online["mde"]),
        f"Offline lift ({off_name}) [low, high]": (
            format_interval(offline["lift"], offline["low"], offline["high"]) if offline else "n/a"
        ),
        "Exact lift": format_number(result["exact_lift"]),
    }
    for key, label in (("same_sign", "Same sign"), ("online_in_offline_interval",
                       "Online lift in offline interval")):  # fmt: skip
        comparison[label] = ("yes" if agree[key] else "no") if agree else "n/a"
    blocks.append(doc.Table(tuple(comparison), (tuple(comparison.values()),)))
    relative = (online[f"relative_{k}"] for k in ("lift", "low", "high"))
    blocks.append(doc.Paragraph(f"Relative online lift (B / A - 1): {format_interval(*relative)}."))
    arms = tuple(
        (
            arm.upper(),
            a["label"],
            a["spec"],
            *(f"{int(a[k]):,}" for k in ("users", "visits", "impressions", "clicks")),
            *(format_number(a[k]) for k in ("ctr", "clicks_per_visit", "exact_value")),
        )
        for arm, a in sorted(result["arms"].items())
    )
    columns = (
        "Arm",
        "Label",
        "Spec",
        "Users",
        "Visits",
        "Impressions",
        "Clicks",
        "CTR",
        "Clicks/visit",
    )
    blocks.append(doc.Table((*columns, "Exact value"), arms))
    lifts = [{"label": "online A/B", **online}]
    if offline:
        lifts.append({**offline, "label": f"offline ({off_name})"})
    frame = pd.DataFrame(lifts)[["label", "lift", "low", "high"]]
    caption, exact = "A/B lift: online vs. offline vs. exact", float(result["exact_lift"])
    blocks.append(ctx.figure("ab_lift", caption, fig.plot_ab_lift, frame, exact_lift=exact))
    return blocks


def _graph(ctx: Context) -> list[doc.Block]:
    blocks: list[doc.Block] = [doc.Heading("Causal graph")]
    graph = ctx.inputs["causal_graph.json"]
    if graph is None:
        return [*blocks, ctx.unavailable("causal_graph.json")]
    rows = tuple(
        (
            n["name"],
            n["label"],
            "yes" if n["observed"] else "no (latent)",
            ", ".join(s for s, t in graph["edges"] if t == n["name"]),
        )
        for n in graph["nodes"]
    )
    blocks.append(doc.Table(("Variable", "Label", "Observed", "Direct causes"), rows))
    caption = "Causal graph (latent variables dashed)"
    blocks.append(ctx.figure("causal_graph", caption, fig.plot_causal_graph, graph))
    return blocks


def build(ctx: Context) -> list[doc.Block]:
    """Every section of the report, in order; draws the figures into ``ctx.figures_dir``."""
    sections = (_run, _policies, _selection, _ope_errors, _sensitivity, _abtest, _graph)
    return [block for section in sections for block in section(ctx)]
