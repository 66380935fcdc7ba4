"""Scripted (non-RL) pruning policies, one module per env family, and ``prune-gym compare``.

* :mod:`baselines.registry` — the one table of scripted policies (and per-family runners and reports).
* :mod:`baselines.rnp` — uniform width, random groups, the vanilla narrow networks, RNP's runner.
* :mod:`baselines.dropnet`, :mod:`baselines.layerprune`, :mod:`baselines.alphablend` — those families' rules.
* :mod:`baselines.compare` — ``prune-gym compare``.
* :mod:`baselines.rnp_pareto` — the RNP accuracy–MACs sweep (custom DQN, SB3, scripted, vanilla).
"""
