"""The closed loop: serve → feedback → retrain → redeploy over generations, in twin worlds.

* :mod:`causalrec.loop.world`: the population whose interests and item popularity persist across
  generations (:class:`LoopWorld`, :class:`WorldState`), with common random numbers per
  generation so twin worlds differ only by what their policies did.
* :mod:`causalrec.loop.config`: :class:`LoopConfig` (``configs/loop/*.yaml``) and its arms.
* :mod:`causalrec.loop.arms`: what an arm deploys in a generation (logger, fixed policy, or the
  model it retrained on all its logs).
* :mod:`causalrec.loop.runner`: :func:`run_loop` (``causalrec loop``), resumable generation by
  generation; :mod:`causalrec.loop.report`: figures and tables over generations.
* :mod:`causalrec.loop.metrics`: long-tail exposure and click share, catalogue coverage, the
  Gini coefficient of exposure and the homogenisation of user interests.
"""

from causalrec.loop.config import ArmConfig, LoopConfig, load_loop_config
from causalrec.loop.metrics import (
    catalogue_coverage,
    exposure_gini,
    interest_homogenisation,
    long_tail_items,
    long_tail_share,
)
from causalrec.loop.runner import LoopResult, read_results, run_loop
from causalrec.loop.world import GenerationRun, LoopWorld, WorldState

__all__ = [
    "ArmConfig",
    "GenerationRun",
    "LoopConfig",
    "LoopResult",
    "LoopWorld",
    "WorldState",
    "catalogue_coverage",
    "exposure_gini",
    "interest_homogenisation",
    "load_loop_config",
    "long_tail_items",
    "long_tail_share",
    "read_results",
    "run_loop",
]
