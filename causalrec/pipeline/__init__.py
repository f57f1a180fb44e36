"""The end-to-end pipeline: simulate, tune, deploy, A/B test, evaluate off-policy, report.

:func:`run_pipeline` runs the stages of a :class:`PipelineConfig` (``causalrec pipeline``);
:func:`write_report` turns a run directory into ``report.md``, ``report.html`` and figures
(:class:`ReportPaths`).
"""

from causalrec.pipeline.config import PipelineConfig, load_pipeline_config
from causalrec.pipeline.report import ReportPaths, write_report
from causalrec.pipeline.runner import check_config, run_pipeline

__all__ = [
    "PipelineConfig",
    "ReportPaths",
    "check_config",
    "load_pipeline_config",
    "run_pipeline",
    "write_report",
]
