"""Debiasing recommenders in PyTorch (naive MF, IPS, SNIPS, DR-JL, MRDR, CausE, DICE, ...).

Not implemented yet: this subpackage is filled by the methods issue. It exports nothing.
"""

__all__: list[str] = []
