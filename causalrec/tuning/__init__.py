"""Ray Tune searches over debiasing methods, selected by an OPE estimate, with true regret.

Not implemented yet: this subpackage is filled by the tuning issue. It exports nothing.
"""

__all__: list[str] = []
