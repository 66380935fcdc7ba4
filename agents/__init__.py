"""Learning agents for prune-gym environments (the custom RNP DQN and Stable-Baselines3 runners).

Nothing is implemented here yet: the agents issue adds them. Environments already expose what they
need: native vector envs, :class:`prune_gym.envs.sb3.SB3VecEnvAdapter` and ``finetune_backbone``.
"""
