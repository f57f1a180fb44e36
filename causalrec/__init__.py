"""causalrec: causal (debiased) recommendation.

Simulators with confounded exposure and exact ground truth (`causalrec.simulators`), debiasing
recommenders (`causalrec.methods`), off-policy evaluation (`causalrec.ope`), search with Ray Tune
(`causalrec.tuning`), serving with Ray Serve (`causalrec.serve`), all on top of
`causalrec.platform` (config, storage, Ray runtime, CLI).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("causalrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
