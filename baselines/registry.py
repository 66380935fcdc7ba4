"""The one table of scripted (non-RL) policies, keyed by environment family.

The policy protocol (:class:`~prune_gym.policies.ScriptedPolicy`, ``policy(obs, info) -> action``)
lives in :mod:`prune_gym.policies`; an env id's family comes from the env registry
(:func:`prune_gym.registry.family_of`). A family module registers its policies with :func:`register_policy` when it is
imported; :data:`FAMILY_MODULES` says which module that is, so ``policies_for(env_id)`` works
without the caller importing anything first.

A family may also register a *runner* with :func:`register_runner`: the function that evaluates
one policy for one seed and returns result rows for ``prune-gym compare`` (see
:mod:`prune_gym.baselines.compare` for the row format and the default runner, which plays one episode),
a *report* with :func:`register_report`: a function that writes the family's own figures or
tables from those rows next to compare's outputs (e.g. LayerPrune's α/γ per layer over training),
and a *stored-rows reader* with :func:`register_stored_rows_reader`: a function that learns from the
rows an earlier comparison left in the output directory what its runner would otherwise compute
again (MaskOffset's static criteria need the ``fixed-offset`` run's FLOPs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prune_gym.policies import AGENT_SEPARATOR, PolicyFactory, ScriptedPolicy, is_agent_policy
from prune_gym.registry import FAMILIES, family_of

# runner(env_id, policy, seed, env_kwargs, eval_data) -> result rows (dicts), see prune_gym.baselines.compare.
Runner = Callable[[str, ScriptedPolicy, int, dict[str, Any], "str | None"], list[dict[str, Any]]]
# report(rows, out_dir, env_id) writes a family's extra outputs into out_dir, see prune_gym.baselines.compare.
Report = Callable[[list[dict[str, Any]], Path, str], None]
# reader(rows, env_id, env_kwargs, eval_data) takes in the rows an earlier comparison stored.
StoredRowsReader = Callable[[list[dict[str, Any]], str, dict[str, Any], "str | None"], None]

# family → the module whose import registers that family's policies.
FAMILY_MODULES: dict[str, str] = {family: f"prune_gym.baselines.{family.lower()}" for family in FAMILIES}


_POLICIES: dict[str, dict[str, ScriptedPolicy]] = {}
_RUNNERS: dict[str, Runner] = {}
_REPORTS: dict[str, Report] = {}
_STORED_ROWS_READERS: dict[str, StoredRowsReader] = {}


def register_policy(family: str, name: str, description: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: register ``make(env) -> policy`` as ``name`` for every env of ``family``."""
    if is_agent_policy(name):
        raise ValueError(f"Scripted policy name {name!r} holds {AGENT_SEPARATOR!r}, which marks trained agents "
                         "in a comparison (algo:run).")

    def decorate(make: PolicyFactory) -> PolicyFactory:
        table = _POLICIES.setdefault(family, {})
        if name in table and table[name].make is not make:
            raise ValueError(f"A {family} policy named {name!r} is already registered.")
        table[name] = ScriptedPolicy(family, name, description, make)
        return make

    return decorate


def _register_once(table: dict[str, Any], family: str, function: Any, what: str) -> Any:
    """Put ``function`` in ``table`` under ``family``; a different second one is an error."""
    if family in table and table[family] is not function:
        raise ValueError(f"A {what} for family {family!r} is already registered.")
    table[family] = function
    return function


def register_runner(family: str) -> Callable[[Runner], Runner]:
    """Decorator: ``runner(env_id, policy, seed, env_kwargs, eval_data) -> rows`` evaluates one
    policy of ``family`` for one seed in ``prune-gym compare`` instead of the default runner."""

    return lambda runner: _register_once(_RUNNERS, family, runner, "runner")


def runner_for(env_id: str) -> Runner | None:
    """The runner ``env_id``'s family registered, or None (then compare's default runner applies)."""
    family = family_of(env_id)
    _load_family(family)
    return _RUNNERS.get(family)


def register_report(family: str) -> Callable[[Report], Report]:
    """Decorator: ``report(rows, out_dir, env_id)`` writes ``family``'s own figures or tables from
    the result rows (which the family's runner may extend with columns of its own) whenever
    ``prune-gym compare`` rewrites its outputs."""

    return lambda report: _register_once(_REPORTS, family, report, "report")


def report_for(env_id: str) -> Report | None:
    """The report ``env_id``'s family registered, or None."""
    family = family_of(env_id)
    _load_family(family)
    return _REPORTS.get(family)


def register_stored_rows_reader(family: str) -> Callable[[StoredRowsReader], StoredRowsReader]:
    """Decorator: ``reader(rows, env_id, env_kwargs, eval_data)`` is given the rows ``prune-gym
    compare`` found in its output directory (``--resume``, or runs kept beside new ones) before
    it plays the others, so ``family``'s runner can reuse what they hold instead of replaying it."""

    return lambda reader: _register_once(_STORED_ROWS_READERS, family, reader, "stored-rows reader")


def stored_rows_reader_for(env_id: str) -> StoredRowsReader | None:
    """The stored-rows reader ``env_id``'s family registered, or None."""
    family = family_of(env_id)
    _load_family(family)
    return _STORED_ROWS_READERS.get(family)


def _load_family(family: str) -> dict[str, ScriptedPolicy]:
    module = FAMILY_MODULES.get(family)
    if module is None:
        raise ValueError(f"No scripted policies for env family {family!r}; families: {', '.join(FAMILY_MODULES)}.")
    importlib.import_module(module)
    return _POLICIES.get(family, {})


def policies_for(env_id: str) -> list[ScriptedPolicy]:
    """Every scripted policy that runs on ``env_id``, in registration order."""
    return list(_load_family(family_of(env_id)).values())


def get_policy(env_id: str, name: str) -> ScriptedPolicy:
    """The policy ``name`` of ``env_id``'s family; the error lists the valid names."""
    table = _load_family(family_of(env_id))
    if name not in table:
        raise ValueError(f"Unknown policy {name!r} for {env_id}; valid: {', '.join(table) or '(none)'}.")
    return table[name]
