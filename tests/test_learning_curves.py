"""The agents-against-scripted scoreboard and learning curves (baselines/learning_curves.py)."""

import csv
import json

import numpy as np
import pytest

from prune_gym.baselines import learning_curves
from prune_gym.baselines.compare import write_csv


def _run(tmp_path, name, algo, returns, step_column):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"algo": algo, "env_id": "DropNet-MNIST-FC-v0"}))
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[step_column, "return", "length"])
        writer.writeheader()
        for index, value in enumerate(returns):
            writer.writerow({step_column: 3 * (index + 1), "return": value, "length": 3})
    return run_dir


def _comparison(tmp_path, finals):
    out = tmp_path / "compare"
    out.mkdir()
    rows = [{"policy": policy, "seed": seed, "cycle": 1, "final": True, "episode_return": value}
            for policy, values in finals.items() for seed, value in enumerate(values)]
    rows.append({"policy": "min", "seed": 0, "cycle": 0, "final": False, "episode_return": 99.0})  # not final
    write_csv(rows, out / "results.csv")
    (out / "compare.json").write_text(json.dumps({"env_id": "DropNet-MNIST-FC-v0"}))
    return out


def test_interquartile_mean_drops_the_outer_quarters():
    assert learning_curves.interquartile_mean(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])) == 3.5
    assert learning_curves.interquartile_mean(np.array([1.0, 2.0, 6.0])) == 3.0  # fewer than 4: the mean


def test_scoreboard_pools_training_seeds_and_compares_with_the_best_scripted_policy(tmp_path):
    runs = [_run(tmp_path, f"dqn-s{seed}", "rnp-dqn", [0.1, 0.2, 0.3], "iteration") for seed in range(2)]
    ppo = _run(tmp_path, "ppo-s0", "ppo", [0.0, 0.1], "timesteps")
    out = _comparison(tmp_path, {"min": [0.4, 0.5], "max": [0.6, 0.58], "rnp-dqn:dqn-s0": [0.7, 0.6],
                                 "rnp-dqn:dqn-s1": [0.65, 0.62], "ppo:ppo-s0": [0.3, 0.2]})
    figures = learning_curves.main([str(out), "--runs", *map(str, runs), str(ppo), "--window", "2"])
    assert figures["best_scripted"] == "max" and figures["best_scripted_mean"] == pytest.approx(0.59)
    dqn = figures["agents"]["rnp-dqn"]
    assert dqn["episodes"] == 4 and dqn["mean"] == pytest.approx(0.6425) and dqn["beats_best_scripted"]
    assert not figures["agents"]["ppo"]["beats_best_scripted"]
    table = (out / "scoreboard.md").read_text()
    assert "**rnp-dqn** (2 training seeds) | 4 | 0.642 ± 0.043" in table
    assert "ppo does not beat the best scripted policy, max (0.590)" in table
    assert (out / "learning_curves.png").stat().st_size > 0


def test_runs_missing_from_the_comparison_are_named(tmp_path):
    run = _run(tmp_path, "dqn-s0", "rnp-dqn", [0.1], "iteration")
    out = _comparison(tmp_path, {"min": [0.4]})
    with pytest.raises(ValueError, match="rnp-dqn:dqn-s0"):
        learning_curves.main([str(out), "--runs", str(run)])


def test_agents_not_given_as_runs_are_not_taken_for_scripted_policies(tmp_path):
    """A comparison that also holds earlier agents (``compare --resume --agents`` adds runs to one
    directory): only the given runs are scored, and no agent is the bar to beat."""
    run = _run(tmp_path, "dqn1k-s0", "rnp-dqn", [0.1, 0.2], "iteration")
    out = _comparison(tmp_path, {"min": [0.4, 0.5], "rnp-dqn:dqn-s0": [0.9, 0.9], "rnp-dqn:dqn1k-s0": [0.6, 0.6]})
    figures = learning_curves.main([str(out), "--runs", str(run)])
    assert figures["best_scripted"] == "min" and figures["agents"]["rnp-dqn"]["episodes"] == 2
    assert figures["agents"]["rnp-dqn"]["beats_best_scripted"]
    assert "rnp-dqn:dqn-s0" not in (out / "scoreboard.md").read_text()


def test_a_scripted_policy_name_cannot_look_like_an_agent():
    from prune_gym.baselines.registry import register_policy

    with pytest.raises(ValueError, match="marks trained agents"):
        register_policy("DropNet", "rnp-dqn:fake", "not a rule")
