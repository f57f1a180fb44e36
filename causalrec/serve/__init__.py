"""Ray Serve deployment of a fitted recommender: recommendations with propensities, OPE, feedback.

:func:`causalrec.serve.app.build_app` builds the application from :class:`ServeAppArgs` (``serve
run causalrec.serve.app:build_app model_dir=...``, ``serve deploy configs/serve/default.yaml``,
or ``causalrec serve --model DIR``). The Serve-independent parts — :class:`RecommenderCore`,
:class:`EvaluatorCore`, :class:`FeedbackLog` — are importable without starting Ray; ``app`` is
not imported here so that importing :mod:`causalrec.serve` does not import Ray Serve.
"""

from causalrec.serve.config import ServeAppArgs
from causalrec.serve.evaluator import EvaluatorCore
from causalrec.serve.feedback import FeedbackLog
from causalrec.serve.recommender import RecommenderCore

__all__ = ["EvaluatorCore", "FeedbackLog", "RecommenderCore", "ServeAppArgs"]
