"""Issue 12, ``prune-gym compare`` side: earlier results are appended, never dropped; a duplicate
run needs ``--overwrite``; a results directory knows its env id; test-only evaluation files; no
matplotlib notices in the output; progress lines without a terminal. Each test failed before the
fix it guards."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cheap_kwargs, write_fake_npz

from prune_gym import progress
from prune_gym.baselines import registry
from prune_gym.baselines.compare import compare, write_csv
from prune_gym.cli import main as cli_main

FC = "DropNet-MNIST-FC-v0"


def fake_runner(env_id, policy, seed, env_kwargs, eval_data):
    """One final row per run, its accuracy telling policy, seed and call apart."""
    fake_runner.calls += 1
    return [{"policy": policy.name, "seed": seed, "cycle": 0, "final": True, "macs": 10, "macs_full": 20,
             "macs_fraction": 0.5, "test_accuracy": round(0.1 * seed + 0.01 * fake_runner.calls, 4), "wall_s": 0.1}]


@pytest.fixture
def fast_runs(monkeypatch):
    """DropNet runs replaced by :func:`fake_runner` (the comparison's bookkeeping is under test)."""
    registry.runner_for(FC)  # loads the family, so the monkeypatched entry is not overwritten
    fake_runner.calls = 0
    monkeypatch.setitem(registry._RUNNERS, "DropNet", fake_runner)
    return fake_runner


def csv_runs(out: Path) -> list[tuple[str, str, str]]:
    with open(out / "results.csv") as handle:
        return [(row["policy"], row["seed"], row["test_accuracy"]) for row in csv.DictReader(handle)]


def test_a_second_compare_into_the_same_directory_appends(fast_runs, tmp_path):
    out = tmp_path / "out"
    compare(FC, policies="min", seeds=2, out=out)
    rows = compare(FC, policies="max", seeds=1, out=out)
    assert csv_runs(out) == [("min", "0", "0.01"), ("min", "1", "0.12"), ("max", "0", "0.03")]
    assert len(rows) == 3
    table = (out / "results.md").read_text()
    assert "| min | 2 |" in table and "| max | 1 |" in table


def test_a_run_already_there_is_refused_unless_overwrite_replaces_it(fast_runs, tmp_path):
    out = tmp_path / "out"
    compare(FC, policies="min,max", seeds=1, out=out)
    before = csv_runs(out)
    with pytest.raises(ValueError, match=r"already holds 1 of these runs \(min seed 0\).*--overwrite"):
        compare(FC, policies="min", seeds=2, out=out)
    assert csv_runs(out) == before and fast_runs.calls == 2  # refused before running anything
    compare(FC, policies="min", seeds=2, out=out, overwrite=True)
    assert csv_runs(out) == [("max", "0", "0.02"), ("min", "0", "0.03"), ("min", "1", "0.14")]


def test_cli_overwrite_flag(fast_runs, tmp_path, capsys):
    out = str(tmp_path / "out")
    cli_main(["compare", FC, "--policies", "min", "--out", out])
    with pytest.raises(SystemExit, match="prune-gym: error: .*already holds 1 of these runs"):
        cli_main(["compare", FC, "--policies", "min", "--out", out])
    cli_main(["compare", FC, "--policies", "min", "--out", out, "--overwrite"])
    assert csv_runs(Path(out)) == [("min", "0", "0.02")]
    assert "holds 1 rows" in capsys.readouterr().out


def test_resume_runs_only_what_the_directory_lacks(fast_runs, tmp_path, capsys):
    """A comparison killed after some runs, or one that gains an agent or seeds, plays only the
    missing (policy, seed) runs and keeps every earlier row as it was."""
    out = tmp_path / "out"
    compare(FC, policies="min", seeds=1, out=out)
    rows = compare(FC, policies="min,max", seeds=2, out=out, resume=True)
    assert fast_runs.calls == 4  # min seed 0 was not played again
    assert csv_runs(out) == [("min", "0", "0.01"), ("max", "0", "0.02"), ("min", "1", "0.13"), ("max", "1", "0.14")]
    assert len(rows) == 4
    cli_main(["compare", FC, "--policies", "min,max", "--seeds", "2", "--out", str(out), "--resume"])
    assert fast_runs.calls == 4 and len(csv_runs(out)) == 4  # nothing left to run; the tables are rebuilt
    assert "| max | 2 |" in (out / "results.md").read_text() and "holds 4 rows" in capsys.readouterr().out
    with pytest.raises(ValueError, match="pass one of the two"):
        compare(FC, policies="min", out=out, resume=True, overwrite=True)


def test_another_env_or_other_settings_are_refused_in_the_same_directory(fast_runs, tmp_path):
    out = tmp_path / "out"
    compare(FC, policies="min", out=out, env_kwargs={"max_cycles": 2})
    with pytest.raises(ValueError, match=r"holds results of DropNet-MNIST-FC-v0 .* not DropNet-MNIST-Conv-v0"):
        compare("DropNet-MNIST-Conv-v0", policies="min", out=out, overwrite=True)
    with pytest.raises(ValueError, match=r"other settings \(env_kwargs: \{'max_cycles': 2\} there, "
                                         r"\{'max_cycles': 3\} now\)"):
        compare(FC, policies="max", out=out, env_kwargs={"max_cycles": 3})
    assert csv_runs(out) == [("min", "0", "0.01")]


def test_report_only_with_the_wrong_env_id_is_a_clear_error(fast_runs, tmp_path):
    out = tmp_path / "out"
    compare(FC, policies="min", out=out)
    with pytest.raises(SystemExit, match=r"prune-gym: error: .* holds results of DropNet-MNIST-FC-v0 \(see "):
        cli_main(["compare", "RNP-CIFAR10-v0", "--report-only", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"results.csv does not exist: --report-only rebuilds"):
        cli_main(["compare", FC, "--report-only", "--out", str(tmp_path / "empty")])
    cli_main(["compare", FC, "--report-only", "--out", str(out)])  # the right id still works


def test_compare_evaluates_on_a_test_only_eval_file(fake_data_dir, tmp_path):
    full = write_fake_npz(tmp_path / "full.npz", "mnist", test_size=24)
    with np.load(full) as arrays:
        np.savez(tmp_path / "eval.npz", x_test=arrays["x_test"], y_test=arrays["y_test"])
    kwargs = {**cheap_kwargs(FC, fake_data_dir), "kappa": 0.0, "max_cycles": 1}
    rows = compare(FC, policies="min", eval_data=str(tmp_path / "eval.npz"), out=tmp_path / "out", env_kwargs=kwargs)
    # 24 test images: every accuracy is a multiple of 1/24
    assert rows and all(round(row["test_accuracy"] * 24, 6).is_integer() for row in rows)


def test_compare_output_carries_no_matplotlib_font_cache_notices(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_csv([{"policy": "min", "seed": 0, "cycle": 0, "final": True, "test_accuracy": 0.5, "macs": 1,
                "macs_full": 2, "macs_fraction": 0.5}], out / "results.csv")
    # A fresh matplotlib config dir: the first run that builds the font cache.
    environment = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    finished = subprocess.run([sys.executable, "-m", "prune_gym.cli", "compare", FC, "--report-only",
                               "--out", str(out)], capture_output=True, text=True, env=environment, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "mpl").is_dir()  # matplotlib did start from an empty cache
    output = finished.stdout + finished.stderr
    assert "fontManager" not in output and "font cache" not in output
    assert "| min | 1 | 50.00 |" in finished.stdout


def test_compare_prints_progress_lines_without_a_terminal(fast_runs, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(progress, "is_interactive", lambda stream=None: False)
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="prune_gym.progress")
    compare(FC, policies="min,max", seeds=1, out=tmp_path / "out")
    lines = [record.getMessage() for record in caplog.records if record.name == "prune_gym.progress"]
    assert lines[0].startswith(f"compare {FC}: 1/2 runs (50 %)") and "ETA" in lines[0]
    assert lines[-1].startswith(f"compare {FC}: 2/2 runs (100 %)") and "done" in lines[-1]


def test_a_damaged_extras_file_is_a_clear_error(fast_runs, tmp_path):
    compare(FC, policies="min", seeds=1, out=tmp_path)
    (tmp_path / "extras.jsonl").write_text('{"policy": "min", "seed": 0\n')
    with pytest.raises(ValueError, match="extras.jsonl line 1 is not a record of extras"):
        compare(FC, policies="max", seeds=1, out=tmp_path)
