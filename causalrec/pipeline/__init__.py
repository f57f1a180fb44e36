"""The end-to-end pipeline: simulate, tune, deploy, A/B test, evaluate off-policy, report.

:func:`write_report` turns a run directory into ``report.md``, ``report.html`` and figures
(:class:`ReportPaths`).
"""

from causalrec.pipeline.report import ReportPaths, write_report

__all__ = ["ReportPaths", "write_report"]
