"""Environment families, one module each (see :mod:`prune_gym.registry` for the ids)."""
