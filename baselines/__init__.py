"""Scripted (non-RL) pruning policies, one module per env family, and ``prune-gym compare``.

:mod:`baselines.registry` is the one table of policies (and per-family runners);
:mod:`baselines.dropnet` holds DropNet's six rules; :mod:`baselines.compare` the comparison.
"""
