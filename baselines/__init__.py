"""Scripted (non-RL) pruning policies, one module per env family, and ``prune-gym compare``.

Installed as ``prune_gym.baselines`` (the folder stays ``baselines/`` in the checkout).

* :mod:`prune_gym.baselines.registry` — the one table of scripted policies (and per-family runners
  and reports).
* :mod:`prune_gym.baselines.rnp` — uniform width, random groups, the vanilla narrow networks, RNP's runner.
* :mod:`prune_gym.baselines.dropnet`, :mod:`prune_gym.baselines.layerprune`,
  :mod:`prune_gym.baselines.alphablend` — those families' rules.
* :mod:`prune_gym.baselines.compare` — ``prune-gym compare``.
* :mod:`prune_gym.baselines.rnp_pareto` — the RNP accuracy–MACs sweep (custom DQN, SB3, scripted, vanilla).
* :mod:`prune_gym.baselines.plotting` — pyplot on the Agg backend without font-cache notices.
"""
