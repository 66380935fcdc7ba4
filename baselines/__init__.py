"""Scripted (non-RL) pruning policies and the comparison scripts.

Nothing is implemented here yet: the agents and DropNet issues add the policies and ``compare``.
"""
