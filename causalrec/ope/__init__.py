"""Off-policy estimators (IPS, SNIPS, DM, DR, SNDR, Switch-DR, DRos, slate estimators).

Not implemented yet: this subpackage is filled by the off-policy evaluation issue. It exports
nothing.
"""

__all__: list[str] = []
