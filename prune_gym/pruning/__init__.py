"""Pruning mechanics: the one MAC/parameter counter and runtime-pruned inference."""
