"""Optional scale-out on Ray: connect to (or start) a Ray instance and run independent jobs as Ray tasks.

Ray is an optional extra (``pip install "prune-gym[ray]"``). Nothing here imports it until a
``--ray`` run asks for it, so ``import prune_gym`` (and every module of the package) never does.

Two uses, both behind ``--ray [ADDRESS]``:

* :func:`map_tasks` runs independent jobs — ``prune-gym compare``'s (policy, seed) runs, the RNP
  sweep's (penalty, seed) trainings — one Ray task each, and hands the results back in the order
  the jobs were given, so the outputs are those of the plain loop.
* :class:`prune_gym.agents.ray_vec_env.RayVecEnv` steps an SB3 ``VecEnv``'s sub-environments as
  Ray actors (``prune-gym train ... --ray``).

Results equal the local run's because every job is seeded by its arguments alone and each task or
actor runs torch with the thread count of the process that submitted it (:func:`torch_threads`):
CPU kernels may split a reduction differently with another number of threads and change the last
bits of a result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

INSTALL_HINT = 'pip install "prune-gym[ray]" (in a checkout: pip install -e ".[ray]")'
# What `--ray` without an address stands for: start a local instance (or join the one RAY_ADDRESS names).
LOCAL = "local"


class RayUnavailableError(ImportError):
    """``--ray`` was asked for, but Ray is not installed."""


def require_ray() -> Any:
    """The ``ray`` module; a :class:`RayUnavailableError` saying how to install it where it is missing."""
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(f"--ray needs Ray, which is not installed here ({error}). "
                                  f"Install the optional extra: {INSTALL_HINT}; or leave out --ray to run "
                                  "in local processes.") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = LOCAL, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected for the duration of the block.

    A process that already called ``ray.init`` (a test fixture, a notebook) keeps its instance and
    it stays up afterwards. Otherwise ``address`` ``None`` or ``"local"`` starts a local instance
    with ``num_cpus`` cores (all of this machine's by default; Ray joins the cluster ``RAY_ADDRESS``
    names instead where that is set), and any other address connects to that cluster
    (``ray.init(address=...)``, e.g. ``"10.0.0.5:6379"`` or ``"auto"``); either is shut down at the
    end of the block.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address in (None, LOCAL):
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    try:
        yield ray
    finally:
        ray.shutdown()


def torch_threads() -> int:
    """This process's torch thread count, which tasks and actors adopt (see the module docstring)."""
    import torch

    return torch.get_num_threads()


def prepare_process(threads: int) -> None:
    """What a fresh worker process (a Ray task's or an actor's) needs first: prune-gym's ids
    registered and torch on the submitting process's ``threads`` threads."""
    import torch

    import prune_gym  # noqa: F401 - a fresh worker has not registered the ids yet

    torch.set_num_threads(threads)


def call_with_threads(function: Callable[..., Any], args: tuple, threads: int) -> Any:
    """``function(*args)`` with torch on ``threads`` threads, prune-gym's ids registered and the
    global random generators reset: the body of every job, local or a Ray task.

    Why reset them: a job must be a function of its arguments alone. A Ray worker runs whatever
    tasks it is given, one after another, and the local loop runs them after whatever this process
    did before, so any code that draws from a global generator without seeding it (a library's
    default, say) would make a job's result depend on its neighbours (seen once: the sweep's Ray
    and local results differed inside the full test suite, not alone)."""
    import random

    import numpy as np
    import torch

    prepare_process(threads)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return function(*args)


def map_tasks(function: Callable[..., Any], calls: Sequence[tuple], ray_address: str | None = None,
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[function(*args) for args in calls]``.

    With ``ray_address`` None the calls run here, one after the other. Otherwise (``"local"`` or a
    cluster's address, see :func:`ray_session`) each call is one Ray task with one CPU, all submitted
    at once; the list still comes back in the order of ``calls``. ``on_result(index, result)`` is
    called as each call finishes (in the order they finish, with Ray), e.g. to rewrite outputs.
    ``function`` and its arguments must pickle (module-level functions do; the Ray workers import
    prune-gym, so on a cluster every node needs it installed and the data where its arguments say).
    """
    results: list[Any] = [None] * len(calls)
    if ray_address is None:
        for index, args in enumerate(calls):
            results[index] = call_with_threads(function, tuple(args), torch_threads())
            if on_result is not None:
                on_result(index, results[index])
        return results
    with ray_session(ray_address) as ray:
        task = ray.remote(num_cpus=1)(call_with_threads)
        threads = torch_threads()
        pending = {task.remote(function, tuple(args), threads): index for index, args in enumerate(calls)}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(finished[0])
            results[index] = ray.get(finished[0])
            if on_result is not None:
                on_result(index, results[index])
    return results
