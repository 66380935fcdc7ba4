"""prune-gym: neural-network pruning decisions as Gymnasium environments.

Importing the package registers every environment id (see :mod:`prune_gym.registry`) and imports
nothing heavy: torch is loaded only when an environment is made.
"""

from prune_gym.registry import register_envs

__version__ = "0.1.0"
__all__ = ["__version__", "register_envs"]

register_envs()
