"""Learning agents for prune-gym environments.

* ``--algo rnp-dqn``, the custom DQN, is two agents, each in its own file; the env id's family picks one:

  * :mod:`prune_gym.agents.rnp_dqn` — RNP's decision network (per-layer encoders, one shared GRU, one
    decoder) trained on the native batched RNP env with alternating backbone fine-tuning (RNP ids);
  * :mod:`prune_gym.agents.dqn` — an MLP Q-network on single transitions (any other ``Discrete`` env);
  * :mod:`prune_gym.agents.dqn_common` — what both share (Double-DQN target, target update, ε schedule,
    RNG checkpoint, the training loop).
* :mod:`prune_gym.agents.sb3` — Stable-Baselines3 DQN/PPO/A2C and sb3-contrib's MaskablePPO (``ppo_mask``,
  acting among the env's ``action_masks()`` only) on ``Discrete`` envs, SAC/TD3 on ``Box``.
* :mod:`prune_gym.agents.ray_vec_env` — an SB3 ``VecEnv`` whose sub-environments are Ray actors (``--ray``).
* :mod:`prune_gym.agents.runs` — run directories (``prune-gym train``), hyperparameters from
  ``agents/hyperparams/<algo>.yml`` (RL-zoo layout), and loading a trained policy.
* :mod:`prune_gym.agents.evaluate` — ``prune-gym evaluate``.
"""

# What `prune-gym train --algo` accepts; here so the command line can list them without importing torch.
ALGORITHMS = ("rnp-dqn", "dqn", "ppo", "ppo_mask", "a2c", "sac", "td3")
