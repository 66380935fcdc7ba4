import json
import subprocess
import sys

import gymnasium as gym
import pytest

import prune_gym
from prune_gym.cli import main as cli_main
from prune_gym.registry import (
    ENV_TABLE,
    FAMILIES,
    arena_base,
    env_ids,
    family_of,
    get_entry,
    ids_of_family,
    is_family,
)


def test_import_registers_every_id_without_loading_torch():
    code = ("import sys, gymnasium as gym, prune_gym; "
            "ids = [e.id for e in prune_gym.registry.ENV_TABLE]; "
            "assert all(i in gym.registry for i in ids), ids; "
            "assert 'torch' not in sys.modules, 'import prune_gym loaded torch'; print(len(ids))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(output.stdout) == len(ENV_TABLE)


def test_register_is_idempotent():
    before = {env_id: gym.spec(env_id) for env_id in env_ids()}
    prune_gym.register_envs()
    prune_gym.register_envs()
    assert {env_id: gym.spec(env_id) for env_id in env_ids()} == before


def test_module_prefixed_id_resolves():
    env = gym.make("prune_gym:RNP-Synthetic-v0")  # cheap: nothing loads before reset
    assert env.spec.id == "RNP-Synthetic-v0" and env.spec.vector_entry_point is not None


def test_registered_kwargs_are_json():
    for env_id in env_ids():
        json.dumps(get_entry(env_id).kwargs)  # registered kwargs are JSON-serialisable (spec round trips: test_envs)


def test_every_id_has_one_family_from_the_table():
    assert {entry.family for entry in ENV_TABLE} == set(FAMILIES)
    assert family_of("DropNet-MNIST-Conv-v0") == "DropNet" and family_of("prune_gym:RNP-CIFAR10-v0") == "RNP"
    assert is_family("RNP-Synthetic-v0", "RNP") and not is_family("CartPole-v1", "RNP")
    assert ids_of_family("AlphaBlend") == ["AlphaBlend-CIFAR10-v1", "AlphaBlend-CIFAR10-v0",
                                           "AlphaBlend-CIFAR10-Arena-v1"]
    with pytest.raises(gym.error.UnregisteredEnv):
        family_of("CartPole-v1")


@pytest.mark.parametrize("entry", [entry for entry in ENV_TABLE if entry.arena_of], ids=lambda entry: entry.id)
def test_an_arena_keeps_its_base_ids_family_and_spaces(entry):
    """Agents trained in an arena act in its base id (evaluation at the full budget), so both
    must be one family with the same action and observation spaces."""
    base = get_entry(entry.arena_of)
    assert base.family == entry.family and base.arena_of is None and arena_base(entry.id) == base.id
    arena, full = gym.make(entry.id).unwrapped, gym.make(base.id).unwrapped  # nothing loads before reset
    assert arena.action_space == full.action_space and arena.observation_space == full.observation_space


def test_every_arena_names_its_base():
    arenas = {entry.id for entry in ENV_TABLE if "-Arena-" in entry.id}
    assert arenas == {entry.id for entry in ENV_TABLE if entry.arena_of}
    assert arena_base("LayerPrune-MNIST-v1") is None and arena_base("CartPole-v1") is None


@pytest.mark.parametrize("command", ["pretrain", "bench"])
def test_rnp_commands_refuse_another_family_in_one_line(command):
    with pytest.raises(SystemExit, match=f"{command} works on the RNP environments; LayerPrune-MNIST-v1 is a "
                                         "LayerPrune one. Choose one of: RNP-CIFAR10-v0"):
        cli_main([command, "LayerPrune-MNIST-v1"])


def test_unknown_id_lists_the_valid_ones():
    with pytest.raises(gym.error.UnregisteredEnv, match="RNP-CIFAR10-v0"):
        get_entry("RNP-Imagenet-v9")


def test_cli_envs_lists_every_id(capsys):
    cli_main(["envs"])
    printed = capsys.readouterr().out
    for entry in ENV_TABLE:
        assert entry.id in printed and entry.description in printed
