"""The report's figures: one function per PNG, each taking plain data and an output path.

Figures are built with the object-oriented :class:`matplotlib.figure.Figure` API (Agg canvas, no
pyplot), so drawing never touches global state, never opens a window and leaves nothing to close.
Every PNG is written atomically. Values are in clicks per round (policy values, regret, OPE error)
or clicks per visit (A/B lifts), as in the run directory the report reads.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from causalrec.platform.document import format_number
from causalrec.platform.errors import DataError
from causalrec.platform.storage import write_atomic

__all__ = [
    "draw_causal_graph",
    "layered_layout",
    "new_figure",
    "plot_ab_lift",
    "plot_causal_graph",
    "plot_ope_error",
    "plot_regret",
    "plot_sensitivity",
    "plot_value_vs_ope",
    "save_figure",
]

DPI = 110
_SIZE = (6.0, 4.0)
_HIGHLIGHT, _BASE, _REFERENCE = "#d9822b", "#4c72b0", "#555555"


def new_figure(size: tuple[float, float] = _SIZE) -> Figure:
    """A figure of the reports' size and resolution (Agg canvas, constrained layout)."""
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def plot_value_vs_ope(
    points: pd.DataFrame,
    path: str | Path,
    *,
    oracle_value: float,
    logging_value: float,
    estimator: str = "dr",
) -> Path:
    """Exact policy value against its off-policy estimate, one point per candidate.

    Args:
        points: Columns ``candidate``, ``true_value``, ``estimate``, ``low``, ``high``; shape
            ``(n_candidates, 5)``. Rows with a non-finite estimate are skipped; a non-finite
            bound draws no error bar.
        path: Output PNG.
        oracle_value: Value of the oracle policy (horizontal reference line).
        logging_value: Value of the logging policy (horizontal reference line).
        estimator: Name of the estimator, for the axis label.

    Returns:
        ``path``.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    shown = points[np.isfinite(points["estimate"].to_numpy(dtype=float))]
    x = shown["true_value"].to_numpy(dtype=float)
    y = shown["estimate"].to_numpy(dtype=float)
    below = np.nan_to_num(y - shown["low"].to_numpy(dtype=float), nan=0.0).clip(min=0)
    above = np.nan_to_num(shown["high"].to_numpy(dtype=float) - y, nan=0.0).clip(min=0)
    ax.errorbar(
        x,
        y,
        yerr=np.vstack([below, above]),
        fmt="o",
        color=_BASE,
        capsize=3,
        label=f"{estimator} estimate [low, high]",
    )
    for name, xi, yi in zip(shown["candidate"], x, y, strict=True):
        ax.annotate(str(name), (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
    finite = [v for v in (*x, *y, oracle_value, logging_value) if np.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = 0.05 * (hi - lo) or 0.01
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls=":", color="grey", label="y = x")
    if np.isfinite(oracle_value):
        ax.axhline(oracle_value, ls="--", color=_HIGHLIGHT, label=f"oracle ({oracle_value:.4g})")
    if np.isfinite(logging_value):
        ax.axhline(logging_value, ls="-.", color=_REFERENCE, label=f"logging ({logging_value:.4g})")
    ax.set_xlabel("exact policy value (clicks per round)")
    ax.set_ylabel(f"{estimator} estimate (clicks per round)")
    ax.set_title("Exact value vs. off-policy estimate")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_regret(candidates: pd.DataFrame, path: str | Path) -> Path:
    """Regret to the oracle per candidate, the selected candidate highlighted.

    Args:
        candidates: Columns ``candidate``, ``regret`` and boolean ``selected``; shape
            ``(n_candidates, 3)``.
        path: Output PNG.

    Returns:
        ``path``.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    names = [str(name) for name in candidates["candidate"]]
    selected = candidates["selected"].to_numpy(dtype=bool)
    colors = [_HIGHLIGHT if chosen else _BASE for chosen in selected]
    ax.bar(range(len(names)), candidates["regret"].to_numpy(dtype=float), color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.bar([0], [0], color=_HIGHLIGHT, label="selected")  # legend proxies (zero height)
    ax.bar([0], [0], color=_BASE, label="not selected")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("candidate policy")
    ax.set_ylabel("regret to oracle (clicks per round)")
    ax.set_title("Regret of each candidate to the oracle")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_ope_error(ope: pd.DataFrame, path: str | Path) -> Path:
    """Error of each estimator across candidates (strip plot with the mean marked).

    Args:
        ope: Columns ``estimator`` and ``error`` (estimate minus exact value), one row per
            (candidate, estimator); shape ``(n_rows, 2)`` or wider.
        path: Output PNG.

    Returns:
        ``path``.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    estimators = list(dict.fromkeys(ope["estimator"]))
    labels = []
    for i, name in enumerate(estimators):
        errors = ope.loc[ope["estimator"] == name, "error"].to_numpy(dtype=float)
        errors = errors[np.isfinite(errors)]
        offsets = np.linspace(-0.15, 0.15, len(errors)) if len(errors) > 1 else np.zeros(1)
        ax.scatter(i + offsets[: len(errors)], errors, s=18, color=_BASE, alpha=0.8)
        if len(errors):
            ax.hlines(errors.mean(), i - 0.25, i + 0.25, color=_HIGHLIGHT, lw=2)
        mae = np.abs(errors).mean() if len(errors) else None
        labels.append(f"{name}\nMAE={format_number(mae)}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(estimators)), labels, rotation=30, ha="right", fontsize=7)
    ax.scatter([], [], s=18, color=_BASE, label="one candidate")
    ax.plot([], [], color=_HIGHLIGHT, lw=2, label="mean error")
    ax.set_xlabel("estimator (mean absolute error)")
    ax.set_ylabel("estimate - exact value (clicks per round)")
    ax.set_title("Off-policy estimation error by estimator")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_ab_lift(estimates: pd.DataFrame, path: str | Path, *, exact_lift: float) -> Path:
    """Online and offline lifts with their intervals beside the exact lift.

    Args:
        estimates: Columns ``label``, ``lift``, ``low``, ``high``, one row per measurement
            (e.g. the online A/B test and the offline estimate); shape ``(n_rows, 4)``.
        path: Output PNG.
        exact_lift: The simulator's exact lift, drawn as a dashed line and a marker.

    Returns:
        ``path``.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    lift = estimates["lift"].to_numpy(dtype=float)
    below = np.nan_to_num(lift - estimates["low"].to_numpy(dtype=float), nan=0.0).clip(min=0)
    above = np.nan_to_num(estimates["high"].to_numpy(dtype=float) - lift, nan=0.0).clip(min=0)
    positions = np.arange(len(estimates))
    ax.errorbar(
        positions,
        lift,
        yerr=np.vstack([below, above]),
        fmt="o",
        color=_BASE,
        capsize=6,
        label="estimate [low, high]",
    )
    labels = [str(label) for label in estimates["label"]]
    if np.isfinite(exact_lift):
        ax.axhline(exact_lift, ls="--", color=_HIGHLIGHT, lw=1)
        ax.plot([len(labels)], [exact_lift], "D", color=_HIGHLIGHT, label="exact (simulator)")
        labels.append("exact")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel("lift, B - A (clicks per visit)")
    ax.set_title("A/B lift: online vs. offline vs. exact")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_sensitivity(
    curve: pd.DataFrame, path: str | Path, *, true_value: float, true_gamma: float
) -> Path:
    """Bounds on a policy's value against Γ, with the point estimate and the exact value.

    Args:
        curve: Columns ``gamma``, ``estimate``, ``lower``, ``upper``, ``lower_bootstrap``,
            ``upper_bootstrap``, one row per Γ in increasing order; shape ``(n_gammas, 6)``.
        path: Output PNG.
        true_value: The simulator's exact value (horizontal line; NaN draws none).
        true_gamma: The world's true Γ (vertical line where it falls within the curve's Γ).

    Returns:
        ``path``.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    gamma = curve["gamma"].to_numpy(dtype=float)
    ax.fill_between(
        gamma,
        curve["lower"].to_numpy(dtype=float),
        curve["upper"].to_numpy(dtype=float),
        color=_BASE,
        alpha=0.3,
        label="bounds",
    )
    for column in ("lower_bootstrap", "upper_bootstrap"):
        label = "with sampling uncertainty" if column == "lower_bootstrap" else None
        ax.plot(gamma, curve[column].to_numpy(dtype=float), ls="--", color=_BASE, label=label)
    estimate = float(curve["estimate"].iloc[0])
    ax.axhline(estimate, ls=":", color=_REFERENCE, label=f"point estimate ({estimate:.4g})")
    if np.isfinite(true_value):
        ax.axhline(true_value, ls="-", color=_HIGHLIGHT, label=f"exact value ({true_value:.4g})")
    if np.isfinite(true_gamma) and gamma.min() <= true_gamma <= gamma.max():
        ax.axvline(true_gamma, ls="-.", color=_HIGHLIGHT, lw=1, label=f"true Γ ({true_gamma:.3g})")
    ax.set_xscale("log")
    ax.set_xticks(gamma, [f"{g:g}" for g in gamma])
    ax.minorticks_off()
    ax.set_xlabel("Γ: factor by which the propensities' odds may be off")
    ax.set_ylabel("policy value (clicks per round)")
    ax.set_title("Sensitivity of the selected policy's value to hidden confounding")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def layered_layout(graph: dict) -> dict[str, tuple[int, float]]:
    """Place a DAG's nodes in layers left to right: each node one layer right of its parents.

    A node's layer is the length of the longest path reaching it; within a layer nodes are
    ordered by the mean row of their parents (fewer crossings), then by input order.

    Args:
        graph: ``{"nodes": [{"name": ...}, ...], "edges": [[source, target], ...]}``, as
            written by ``CausalGraph.to_dict``.

    Returns:
        ``{name: (layer, row)}``, rows centred on 0 within each layer.

    Raises:
        DataError: If an edge names an unknown node or the edges contain a cycle.
    """
    names = [str(node["name"]) for node in graph["nodes"]]
    parents: dict[str, list[str]] = {name: [] for name in names}
    for source, target in graph["edges"]:
        for end in (source, target):
            if end not in parents:
                raise DataError(
                    f"causal graph: edge {source!r} -> {target!r} names unknown {end!r}"
                )
        parents[target].append(source)
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(name: str) -> int:
        if name not in layer:
            if name in visiting:
                raise DataError(f"causal graph: the edges contain a cycle through {name!r}")
            visiting.add(name)
            layer[name] = 1 + max((depth(parent) for parent in parents[name]), default=-1)
        return layer[name]

    position: dict[str, tuple[int, float]] = {}
    for current in range(max(map(depth, names), default=-1) + 1):
        members = [name for name in names if layer[name] == current]
        members.sort(key=lambda n: np.mean([position[p][1] for p in parents[n]] or [0.0]))
        for row, name in enumerate(members):
            position[name] = (current, row - (len(members) - 1) / 2)
    return position


def draw_causal_graph(ax: Axes, graph: dict) -> dict[str, Text]:
    """Draw ``graph`` on ``ax``: one box per node (latent ones dashed), one arrow per edge.

    Args:
        ax: Axes to draw on; its limits are set to fit the layout and its frame is hidden.
        graph: ``{"nodes": [{"name", "label", "observed"}, ...], "edges": [[source, target]]}``.

    Returns:
        Node name to the text artist of its box.
    """
    position = layered_layout(graph)
    boxes = {}
    for node in graph["nodes"]:
        layer, row = position[str(node["name"])]
        observed = bool(node.get("observed", True))
        style = {"facecolor": "white", "edgecolor": "black", "linestyle": "-"}
        if not observed:
            style = {"facecolor": "#f4f4f4", "edgecolor": _REFERENCE, "linestyle": "--"}
        label = textwrap.fill(str(node.get("label", node["name"])), 16)
        boxes[str(node["name"])] = ax.text(
            layer, -row, label, ha="center", va="center", fontsize=8, zorder=3,
            bbox={"boxstyle": "round,pad=0.4", **style},
        )  # fmt: skip
    arrow = {"arrowstyle": "-|>", "color": "#333333", "shrinkA": 5, "shrinkB": 5}
    for source, target in graph["edges"]:
        ax.annotate(
            "", xy=(0.0, 0.5), xycoords=boxes[target], xytext=(1.0, 0.5),
            textcoords=boxes[source], arrowprops=arrow,
        )  # fmt: skip
    layers = [layer for layer, _ in position.values()]
    n_layers, n_rows = max(layers, default=0) + 1, max(Counter(layers).values(), default=1)
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_ylim(-n_rows / 2, n_rows / 2)
    ax.axis("off")
    return boxes


def plot_causal_graph(graph: dict, path: str | Path) -> Path:
    """Draw a causal graph (see :func:`draw_causal_graph`) into a PNG sized to its layers.

    Args:
        graph: ``{"nodes": [{"name", "label", "observed"}, ...], "edges": [[source, target]]}``.
        path: Output PNG.

    Returns:
        ``path``.
    """
    layers = Counter(layer for layer, _ in layered_layout(graph).values())
    size = (max(_SIZE[0], 2.0 * len(layers)), max(_SIZE[1], 0.9 * max(layers.values(), default=1)))
    fig = new_figure(size)
    ax = fig.add_subplot()
    draw_causal_graph(ax, graph)
    ax.plot([], [], color="black", label="observed (solid box)")
    ax.plot([], [], color=_REFERENCE, ls="--", label="latent (dashed box)")
    ax.legend(fontsize=7, loc="lower center", ncols=2, frameon=False, bbox_to_anchor=(0.5, -0.08))
    ax.set_title("Causal graph of the simulator (arrows: direct causal effects)")
    return save_figure(fig, path)
