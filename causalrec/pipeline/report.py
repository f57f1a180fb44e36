"""The report stage: one run directory in, ``report.md``, ``report.html`` and figures out.

Run directory contract (inputs). Any file may be missing because its stage failed or was skipped;
its sections then say "not available: stage X did not complete" (with the stage's error from
``pipeline.json``) and everything else is still written. A file that is present but malformed
raises :class:`~causalrec.platform.errors.DataError` naming the file and the field::

    RUN/
      pipeline.json       config_path | null, seed, started, finished (ISO or null), stages: [{name,
                          status (done|failed|skipped|pending), seconds, error}] in the order
                          simulate, tune, deploy, abtest, ope, report
      summary.json        preset, n_users, n_items, slate_size, n_rounds, uniform_rounds,
                          oracle_value, logging_value, selected {candidate, method, true_value,
                          ope_dr} | null, truly_best {candidate, method, true_value} | null,
                          selection_regret | null
      candidates.csv      candidate, method, trial_id, params (JSON), true_value, regret, selected
      ope.csv             candidate, estimator, estimate, low, high, true_value, error, ess, warning
      ope_uniform.csv     the same, on the uniform-random slice (optional: own table if present)
      abtest/result.json  users, alpha, seed, mode, arms {a, b: {label, spec, users, visits,
                          impressions, clicks, ctr, clicks_per_visit, exact_value}},
                          online {lift, low, high,
                          relative_lift, relative_low, relative_high, p_value, mde}, exact_lift,
                          offline {estimator, lift, low, high} | null,
                          agreement {same_sign, online_in_offline_interval} | null
      causal_graph.json   CausalGraph.to_dict(): nodes [{name, label, observed}], edges [[s, t]]
      sensitivity.json    candidate, estimator, unit, pscore, alpha, n_bootstrap, n_rounds,
                          true_value | null, true_gamma {gamma, standard_error, exact,
                          n_draws} | null, curve [{gamma, estimate, lower, upper,
                          lower_bootstrap, upper_bootstrap}] (the selected candidate's bounds
                          against Γ)

Outputs: ``RUN/report.md``, ``RUN/report.html`` (inline CSS, images linked as ``figures/*.png``)
and ``RUN/figures/{value_vs_ope,regret,ope_error,sensitivity,ab_lift,causal_graph}.png``. Policy
values are in clicks per round, A/B lifts (B minus A) in clicks per visit. Numbers show 4
decimals (scientific with 4 significant digits below 1e-3 or from 1e5), p-values 4 decimals or
``<1e-4``.

A missing file is attributed to the stage that writes it: ``summary.json`` and
``causal_graph.json`` to simulate, ``candidates.csv`` to tune, ``ope.csv`` and
``sensitivity.json`` to ope, ``abtest/result.json`` to abtest. Inputs are read and validated in
``_inputs``, turned into sections in ``_sections``, rendered to Markdown and HTML in
:mod:`causalrec.platform.document` (shared with the loop's report) and drawn in
:mod:`causalrec.pipeline.figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from causalrec.pipeline import _sections
from causalrec.pipeline._inputs import load_inputs
from causalrec.platform import document as doc
from causalrec.platform.document import format_number, format_p_value
from causalrec.platform.errors import DataError
from causalrec.platform.storage import write_atomic

__all__ = ["ReportPaths", "format_number", "format_p_value", "write_report"]


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` wrote the report.

    Attributes:
        markdown: ``RUN/report.md``.
        html: ``RUN/report.html``.
        figures: Figure name (e.g. ``"regret"``) to PNG path, for the figures whose data existed.
    """

    markdown: Path
    html: Path
    figures: dict[str, Path]


def write_report(run_dir: str | Path) -> ReportPaths:
    """Write the report of a pipeline run directory (see the module docstring for the contract).

    Args:
        run_dir: The run directory; it must exist. Inputs may be missing.

    Returns:
        The paths written.

    Raises:
        DataError: If ``run_dir`` is not a directory, or an input is present but malformed
            (names the file and the field).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run_dir {str(run_dir)!r} is not a directory")
    inputs = load_inputs(run_dir)
    figures_dir = run_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    context = _sections.Context(inputs, figures_dir)
    blocks = _sections.build(context)
    for stale in set(_sections.FIGURES) - set(context.figures):  # left by an earlier report
        (figures_dir / f"{stale}.png").unlink(missing_ok=True)
    title = _sections.title(inputs)
    markdown, html = run_dir / "report.md", run_dir / "report.html"
    text_md, text_html = doc.to_markdown(blocks), doc.to_html(blocks, title=title)
    write_atomic(markdown, lambda tmp: tmp.write_text(text_md, encoding="utf-8"))
    write_atomic(html, lambda tmp: tmp.write_text(text_html, encoding="utf-8"))
    return ReportPaths(markdown=markdown, html=html, figures=dict(context.figures))
