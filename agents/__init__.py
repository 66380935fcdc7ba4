"""Learning agents for prune-gym environments.

* :mod:`prune_gym.agents.dqn` — the custom DQN: RNP's decision network (per-layer encoders, one shared GRU,
  one decoder) trained on the native batched RNP env with alternating backbone fine-tuning, and an
  MLP Q-network for any other ``Discrete`` env.
* :mod:`prune_gym.agents.sb3` — Stable-Baselines3 DQN/PPO/A2C (``Discrete``) and SAC/TD3 (``Box``).
* :mod:`prune_gym.agents.runs` — run directories (``prune-gym train``), hyperparameters from
  ``agents/hyperparams/<algo>.yml`` (RL-zoo layout), and loading a trained policy.
* :mod:`prune_gym.agents.evaluate` — ``prune-gym evaluate``.
"""

# What `prune-gym train --algo` accepts; here so the command line can list them without importing torch.
ALGORITHMS = ("rnp-dqn", "dqn", "ppo", "a2c", "sac", "td3")
