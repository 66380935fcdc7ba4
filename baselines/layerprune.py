"""Scripted policies of the LayerPrune family (``policy(obs, info) -> action``).

* ``alpha-threshold`` — the method's own rule: after each epoch remove every layer whose α is
  below ``ALPHA_THRESHOLD`` (0.01). The environment removes one layer per step, so when several
  are below the threshold at once the lowest α goes first and the others follow at the next
  steps. The freezing schedule after a removal is the environment's (``freeze_epochs``, default 1).
* ``never-remove`` — keep all layers: the unpruned reference trained with the same budget.
* ``remove-every-layer`` — remove the first layer still alive at every step until none is left
  (the head alone then trains on): a degenerate reference that shows what the reward pays for
  MACs alone. An agent that beats the method's rule but not this one has learned to trade
  accuracy for MACs at the reward's rate, not to prune well.

For ``prune-gym compare`` the family's runner adds the network's ``depth`` to every row and the γ/α
histories of every layer to the final row; its report writes ``layer_histories.png`` (α and γ per
layer over training for seed 0 of every policy, the method report's Figure 2) and
``layerprune.md`` (final depth, MACs and test accuracy per policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.baselines.registry import register_policy, register_report, register_runner
from prune_gym.policies import Policy, ScriptedPolicy, make_env, play_episode
from prune_gym.results import column_values, mean_std

ALPHA_THRESHOLD = 0.01


def threshold_action(obs: np.ndarray, max_layers: int, threshold: float = ALPHA_THRESHOLD) -> int:
    """``1 + l`` for the alive layer ``l`` with the lowest α below ``threshold``; 0 if there is none."""
    alive, alphas = obs[:max_layers] > 0.5, obs[max_layers:2 * max_layers]
    candidates = [layer for layer in range(max_layers) if alive[layer] and alphas[layer] < threshold]
    if not candidates:
        return 0
    return 1 + min(candidates, key=lambda layer: alphas[layer])


@register_policy("LayerPrune", "alpha-threshold",
                 f"remove a layer once its α < {ALPHA_THRESHOLD} (the method's rule; lowest α first)")
def make_alpha_threshold(env: gym.Env) -> Policy:
    max_layers = env.unwrapped.max_layers

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        return threshold_action(obs, max_layers)

    return policy


@register_policy("LayerPrune", "never-remove", "keep every layer (unpruned network, same training budget)")
def make_never_remove(env: gym.Env) -> Policy:
    return lambda obs, info: 0


@register_policy("LayerPrune", "remove-every-layer", "remove the first alive layer at every step until none is "
                 "left (degenerate reference: what the reward pays for MACs alone)")
def make_remove_every_layer(env: gym.Env) -> Policy:
    max_layers = env.unwrapped.max_layers

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        alive = np.flatnonzero(obs[:max_layers] > 0.5)
        return 1 + int(alive[0]) if len(alive) else 0

    return policy


def plot_layer_histories(histories_by_policy: dict[str, dict[int, dict[str, Any]]], path: str, title: str) -> None:
    """α (top) and γ (bottom) of every layer after every epoch-step, one column per policy (the
    method report's Figure 2). ``histories_by_policy[name]`` is ``LayerPruneEnv.layer_histories()``
    (keys may be strings after a JSON round trip); a removed layer's line ends in a cross."""
    from prune_gym.baselines.plotting import quiet_pyplot

    plt = quiet_pyplot()

    names = list(histories_by_policy)
    figure, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 6.4), squeeze=False, sharex=True)
    for column, name in enumerate(names):
        for origin, history in sorted(histories_by_policy[name].items(), key=lambda item: int(item[0])):
            colour = f"C{int(origin) % 10}"
            for row, key in enumerate(("alpha", "gamma")):
                values = history[key]
                axes[row][column].plot(range(len(values)), values, color=colour, label=f"layer {origin}")
                if history.get("removed_at") is not None:
                    axes[row][column].plot(len(values) - 1, values[-1], "x", color=colour, markersize=9)
        axes[0][column].set_title(name)
        axes[0][column].axhline(ALPHA_THRESHOLD, color="grey", linestyle=":", linewidth=1)
        axes[0][column].set_ylabel("α")
        axes[1][column].set_ylabel("γ")
        axes[1][column].set_xlabel("epoch-step")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@register_runner("LayerPrune")
def run_layerprune(env_id: str, policy: ScriptedPolicy, seed: int, env_kwargs: dict[str, Any],
                   eval_data: str | None) -> list[dict[str, Any]]:
    """One episode (as compare's default runner) with ``depth`` on every row and
    ``layer_histories`` (:meth:`LayerPruneEnv.layer_histories`) on the final row."""
    env = make_env(env_id, env_kwargs, eval_data)
    depths: list[int] = []
    try:
        rows = play_episode(env, policy, seed, before_action=lambda e: depths.append(e.unwrapped.model.depth))
        depths.append(env.unwrapped.model.depth)
        histories = env.unwrapped.layer_histories()
    finally:
        env.close()
    for row, depth in zip(rows, depths):
        row["depth"] = depth
    return [*rows, {**rows[-1], "final": True, "layer_histories": histories}]


@register_report("LayerPrune")
def report_layerprune(rows: list[dict[str, Any]], out: Path, env_id: str) -> None:
    """``layer_histories.png`` (seed 0 of every policy) and ``layerprune.md`` (mean ± std over seeds)."""
    finals = [row for row in rows if row.get("final") and row.get("layer_histories") is not None]
    order = list(dict.fromkeys(row["policy"] for row in finals))
    first_seed = {name: next(row for row in finals if row["policy"] == name) for name in order}
    if first_seed:
        curves = {f"{name} (seed {row['seed']})": row["layer_histories"] for name, row in first_seed.items()}
        plot_layer_histories(curves, str(out / "layer_histories.png"), f"{env_id}: α and γ per layer over training")
    lines = [f"# `{env_id}`: final networks, mean ± std over seeds", "",
             "| policy | seeds | depth | test accuracy (%) | MACs/image (M) | MAC fraction | params |",
             "|---|---|---|---|---|---|---|"]
    for name in order:
        group = [row for row in finals if row["policy"] == name]
        fraction = np.array([row["macs"] / row["macs_full"] for row in group])
        lines.append(f"| {name} | {len(group)} | {mean_std(column_values(group, 'depth'), 1, 2)} "
                     f"| {mean_std(column_values(group, 'test_accuracy'), 100, 2)} "
                     f"| {mean_std(column_values(group, 'macs'), 1e-6, 3)} | {mean_std(fraction, 1, 3)} "
                     f"| {mean_std(column_values(group, 'params'), 1, 0)} |")
    (out / "layerprune.md").write_text("\n".join(lines) + "\n")
