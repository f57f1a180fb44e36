"""Ray Serve deployment of a fitted recommender: recommendations with propensities, OPE.

Not implemented yet: this subpackage is filled by the serving issue. It exports nothing.
"""

__all__: list[str] = []
