"""The closed loop: serve → feedback → retrain → redeploy over generations (issue 16, in progress).

:mod:`causalrec.loop.metrics` holds the per-generation measures of what a recommender does to
its world: long-tail exposure and click share, catalogue coverage, the Gini coefficient of
exposure and the homogenisation of user interests.
"""

from causalrec.loop.metrics import (
    catalogue_coverage,
    exposure_gini,
    interest_homogenisation,
    long_tail_items,
    long_tail_share,
)

__all__ = [
    "catalogue_coverage",
    "exposure_gini",
    "interest_homogenisation",
    "long_tail_items",
    "long_tail_share",
]
