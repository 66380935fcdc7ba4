import csv
import sys

import numpy as np
import pytest
from conftest import cheap_kwargs, write_fake_npz

from prune_gym.baselines import registry
from prune_gym.baselines.compare import COLUMNS, compare, default_runner, select_policies
from prune_gym.cli import main as cli_main
from prune_gym.policies import ScriptedPolicy

FC = "DropNet-MNIST-FC-v0"
REQUIRED = ("policy", "seed", "test_accuracy", "macs", "macs_full", "params", "macs_fraction", "wall_s", "cycle")


def env_kwargs_args(fake_data_dir):
    kwargs = {**cheap_kwargs(FC, fake_data_dir), "kappa": 0.0, "max_cycles": 2}
    return [f"{key}={value}" for key, value in kwargs.items()]


def test_cli_compare_writes_csv_markdown_and_plot(fake_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cli_main(["compare", FC, "--policies", "min,max_layer", "--seeds", "2", "--out", str(out),
              "--env-kwargs", *env_kwargs_args(fake_data_dir)])
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert set(REQUIRED) <= set(rows[0]) and tuple(rows[0]) == COLUMNS
    finals = [row for row in rows if row["final"] == "True"]
    assert sorted((row["policy"], row["seed"]) for row in finals) == [
        ("max_layer", "0"), ("max_layer", "1"), ("min", "0"), ("min", "1")]
    # the whole curve: cycles 0, 1, 2 for every run (max_cycles=2), then the final row
    assert [row["cycle"] for row in rows if row["policy"] == "min" and row["seed"] == "0"] == ["0", "1", "2", "2"]
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0 and int(row["macs"]) <= int(row["macs_full"])
    # two drops of round(20 % of the remaining units): 80 → 64 → 51 overall, 40 → 32 → 26 per layer
    kept = {row["policy"]: float(row["units_kept_fraction"]) for row in finals}
    assert kept == {"min": 51 / 80, "max_layer": 52 / 80}
    table = (out / "results.md").read_text()
    assert "| min | 2 |" in table and "| max_layer | 2 |" in table and "±" in table and "unpruned" in table
    assert "| policy | cycle 0 | cycle 1 | cycle 2 |" in table  # the per-cycle curve
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results.csv" in capsys.readouterr().out
    # --report-only rebuilds the same table from the CSV alone
    (out / "results.md").unlink()
    cli_main(["compare", FC, "--report-only", "--out", str(out)])
    assert (out / "results.md").read_text() == table


def test_cli_lists_the_policies(capsys):
    cli_main(["compare", FC, "--list"])
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["min", "max", "random", "min_layer", "max_layer", "random_layer"]


def test_final_row_is_the_last_architecture_meeting_kappa(fake_data_dir, tmp_path):
    from prune_gym.baselines.dropnet import run_dropnet

    kwargs = {**cheap_kwargs(FC, fake_data_dir), "kappa": 1.0, "drop_fraction": 0.5, "max_cycles": 4}
    rows = run_dropnet(FC, registry.get_policy(FC, "min"), 0, kwargs, None)
    steps, final = rows[:-1], rows[-1]
    assert final["final"] and not any(row["final"] for row in steps)
    full = steps[0]["val_accuracy"]
    met = [row for row in steps if row["val_accuracy"] >= full]
    # κ=1: the episode ends at the first drop that loses validation accuracy; the final network is
    # the last one that did not, retrained from θ0 (deterministic, so the same figures).
    assert final["units_kept_fraction"] == met[-1]["units_kept_fraction"]
    assert final["cross_entropy"] == met[-1]["cross_entropy"]


def test_default_runner_plays_one_episode(fake_data_dir):
    kwargs = {**cheap_kwargs(FC, fake_data_dir), "kappa": 0.0, "max_cycles": 3}
    rows = default_runner(FC, registry.get_policy(FC, "random"), 1, kwargs, None)
    assert [row["cycle"] for row in rows] == [0, 1, 2, 3, 3]
    assert rows[-1] == {**rows[-2], "final": True}
    assert all(row["wall_s"] >= 0 and row["step_s"] >= 0 for row in rows)


def test_a_family_runner_replaces_the_default(fake_data_dir, tmp_path, monkeypatch):
    calls = []

    def runner(env_id, policy, seed, env_kwargs, eval_data):
        calls.append((env_id, policy.name, seed, env_kwargs, eval_data))
        return [{"policy": policy.name, "seed": seed, "cycle": 0, "final": True, "test_accuracy": 0.5, "macs": 10,
                 "macs_full": 20, "params": 3, "macs_fraction": 0.5, "wall_s": 0.1}]

    registry.runner_for(FC)  # loads the family, so the monkeypatched entry is not overwritten
    monkeypatch.setitem(registry._RUNNERS, "DropNet", runner)
    eval_file = write_fake_npz(tmp_path / "eval.npz", "mnist")
    rows = compare(FC, policies="max", seeds=2, eval_data=str(eval_file), out=tmp_path / "o", env_kwargs={"k": 1})
    assert calls == [(FC, "max", 0, {"k": 1}, str(eval_file)), (FC, "max", 1, {"k": 1}, str(eval_file))]
    assert len(rows) == 2 and "| max | 2 | 50.00 ± 0.00 |" in (tmp_path / "o" / "results.md").read_text()


def test_agents_without_the_agents_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prune_gym.agents.runs", None)  # import fails
    with pytest.raises(SystemExit, match="prune_gym.agents.runs.load_agent_policy"):
        compare(FC, policies="min", agent_dirs=[str(tmp_path)], out=tmp_path / "o")


def test_agents_are_run_like_scripted_policies(fake_data_dir, tmp_path, monkeypatch):
    import types

    def load_agent_policy(run_dir):
        family = "DropNet" if run_dir.endswith("good") else "RNP"
        return ScriptedPolicy(family, f"agent-{run_dir[-4:]}", "test agent", lambda env: lambda obs, info: 6)

    fake_runs = types.SimpleNamespace(load_agent_policy=load_agent_policy)
    monkeypatch.setitem(sys.modules, "prune_gym.agents.runs", fake_runs)
    kwargs = {**cheap_kwargs(FC, fake_data_dir), "kappa": 0.0}
    rows = compare(FC, policies="min", agent_dirs=["run-good"], out=tmp_path / "o", env_kwargs=kwargs)
    agent_rows = [row for row in rows if row["policy"] == "agent-good"]
    assert [row["cycle"] for row in agent_rows] == [0, 1, 1] and agent_rows[-1]["final"]  # stop at once
    with pytest.raises(ValueError, match="another env family"):
        compare(FC, policies="min", agent_dirs=["run-bad!"], out=tmp_path / "o", env_kwargs=kwargs)


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="valid: min, max, random, min_layer, max_layer, random_layer"):
        select_policies(FC, "min,median")
    with pytest.raises(ValueError, match="--seeds"):
        compare(FC, seeds=0, out=tmp_path)
    with pytest.raises(ValueError, match="not a file"):
        compare(FC, eval_data=str(tmp_path / "missing.npz"), out=tmp_path)
    with pytest.raises(SystemExit, match="Unknown environment id"):
        cli_main(["compare", "DropNet-Imagenet-v0", "--out", str(tmp_path)])


def test_eval_data_replaces_the_test_split(fake_data_dir, tmp_path):
    import gymnasium as gym
    import torch

    from prune_gym.training import evaluate_classifier

    eval_file = write_fake_npz(tmp_path / "eval.npz", "mnist", train_size=10, test_size=40)
    env = gym.make(FC, **cheap_kwargs(FC, fake_data_dir), eval_data=str(eval_file))
    _, info = env.reset(seed=0)
    dropnet = env.unwrapped
    with np.load(eval_file) as arrays:
        images, labels = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
    expected = evaluate_classifier(dropnet.network, images, labels, dropnet.dataset, torch.device("cpu"))
    assert len(dropnet._core.y_test) == 40 and info["test_accuracy"] == expected["accuracy"]
