import json
import pickle
import subprocess
import sys

import gymnasium as gym
import pytest

import prune_gym
from prune_gym.cli import main as cli_main
from prune_gym.registry import ENV_TABLE, env_ids, get_entry


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


@pytest.mark.parametrize("env_id", env_ids())
def test_spec_pickles_and_serialises(env_id):
    spec = gym.spec(env_id)
    assert pickle.loads(pickle.dumps(spec)) == spec
    restored = gym.envs.registration.EnvSpec.from_json(spec.to_json())
    assert restored.id == env_id and restored.kwargs == spec.kwargs
    json.dumps(get_entry(env_id).kwargs)  # registered kwargs are JSON-serialisable


def test_unknown_id_lists_the_valid_ones():
    with pytest.raises(gym.error.UnregisteredEnv, match="RNP-CIFAR10-v0"):
        get_entry("RNP-Imagenet-v9")


def test_cli_envs_lists_every_id(capsys):
    cli_main(["envs"])
    printed = capsys.readouterr().out
    for entry in ENV_TABLE:
        assert entry.id in printed and entry.description in printed
