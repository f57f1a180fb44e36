"""An A/B result as console lines: arms, the online and exact lift, the offline prediction."""

from __future__ import annotations

import math

__all__ = ["format_lifts", "format_result"]


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def format_result(result: dict) -> str:
    """The result as a console table: arms, online lift, exact lift, offline prediction."""
    lines = [f"{'arm':<4} {'spec':<28} {'visits':>7} {'clicks':>7} {'CTR':>7} "
             f"{'clicks/visit':>12} {'exact':>7}"]  # fmt: skip
    for label, arm in result["arms"].items():
        lines.append(
            f"{label:<4} {arm['spec'][-28:]:<28} {arm['visits']:>7} {arm['clicks']:>7} "
            f"{arm['ctr']:>7.4f} {arm['clicks_per_visit']:>12.4f} {arm['exact_value']:>7.4f}"
        )
    return "\n".join([*lines, *format_lifts(result)])


def format_lifts(result: dict) -> list[str]:
    """Online, exact and offline lift of a result, with the agreement verdicts."""
    online = result["online"]
    lines = [
        f"online lift (b - a): {_number(online['lift'])} "
        f"[{_number(online['low'])}, {_number(online['high'])}], "
        f"relative {online['relative_lift']:+.1%}, p = {online['p_value']:.4g}, "
        f"MDE {_number(online['mde'])}",
        f"exact lift:          {_number(result['exact_lift'])}",
    ]
    if result.get("identical_arms"):
        lines.append("A/A test: both arms serve the same model (exact and offline lifts are 0)")
    offline = result["offline"]
    if offline is not None:
        agreement = result["agreement"]
        lines.append(
            f"offline ({offline['estimator']}) lift: {_number(offline['lift'])} "
            f"[{_number(offline['low'])}, {_number(offline['high'])}]; same sign: "
            f"{'yes' if agreement['same_sign'] else 'no'}; online inside offline interval: "
            f"{'yes' if agreement['online_in_offline_interval'] else 'no'}"
        )
    return lines
