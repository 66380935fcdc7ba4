"""Scripted (non-RL) pruning policies and the comparison scripts.

* :mod:`baselines.registry` — the one table of scripted policies, per env family.
* :mod:`baselines.rnp` — uniform width, random groups, and the vanilla narrow networks for RNP.
* :mod:`baselines.rnp_pareto` — the RNP accuracy–MACs sweep (custom DQN, SB3, scripted, vanilla).
"""
