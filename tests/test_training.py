import warnings

import pytest
import torch
from conftest import count_pretrain_calls
from torch import nn

from prune_gym import pretraining
from prune_gym.data import synthetic_dataset
from prune_gym.models import BACKBONES, GroupedCNN
from prune_gym.pretraining import (
    FIELDS_ADDED_TO_KEYS,
    BackboneRequest,
    PretrainBudget,
    _training_batches,
    cache_key,
    pair_covering_configs,
    pretrained_backbone,
    recalibrate_batchnorm,
)
from prune_gym.training import augment_batch, cutout_batch, resolve_device, train_loop
from prune_gym.weights import WeightsCacheWarning, cache_path

TINY = BackboneRequest("synthetic", budget=PretrainBudget(steps=3, eval_every=3))


@pytest.fixture
def fresh_process_cache(monkeypatch, tmp_path):
    """Forget in-process backbones and use an empty disk cache, as a new process would."""
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(tmp_path))
    return tmp_path




def test_second_process_loads_the_cache_instead_of_training(fresh_process_cache, monkeypatch):
    calls = count_pretrain_calls(monkeypatch)
    first, metrics, dataset = pretrained_backbone(TINY, device="cpu")
    path = cache_path(cache_key(TINY, dataset))
    assert path.is_file() and len(calls) == 1
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temporary file
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    second, metrics_again, _ = pretrained_backbone(TINY, device="cpu")
    assert len(calls) == 1 and metrics_again == metrics
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key"])
def test_corrupt_or_mismatched_cache_is_reported_and_retrained(fresh_process_cache, monkeypatch, damage):
    _, _, dataset = pretrained_backbone(TINY, device="cpu")
    path = cache_path(cache_key(TINY, dataset))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        payload = torch.load(path, weights_only=True)
        payload["key"]["seed"] = 99
        torch.save(payload, path)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    calls = count_pretrain_calls(monkeypatch)
    with pytest.warns(WeightsCacheWarning, match=str(path)):
        pretrained_backbone(TINY, device="cpu")
    assert len(calls) == 1
    with warnings.catch_warnings():  # the retrained file is intact again
        warnings.simplefilter("error", WeightsCacheWarning)
        monkeypatch.setattr(pretraining, "_PRETRAINED", {})
        pretrained_backbone(TINY, device="cpu")


def test_cache_key_covers_architecture_data_seed_and_budget():
    dataset = synthetic_dataset()
    base = cache_path(cache_key(TINY, dataset))
    variants = [
        BackboneRequest("synthetic", backbone="cnn6", budget=TINY.budget),
        BackboneRequest("synthetic", k=2, budget=TINY.budget),
        BackboneRequest("synthetic", dropout=0.1, budget=TINY.budget),
        BackboneRequest("synthetic", seed=1, budget=TINY.budget),
        BackboneRequest("synthetic", budget=PretrainBudget(steps=4, eval_every=3)),
    ]
    paths = {cache_path(cache_key(request, dataset)) for request in variants}
    assert base not in paths and len(paths) == len(variants)
    other_data = synthetic_dataset(seed=1)
    assert cache_path(cache_key(TINY, other_data)) != base


def test_train_loop_stops_early_and_restores_the_best_weights():
    model = nn.Linear(1, 1, bias=False)
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.8, 1.0])

    def step(index: int) -> float:
        with torch.no_grad():
            model.weight.fill_(index)
        return 0.0

    result = train_loop(model, step, lambda: {"score": next(scores)}, steps=12, eval_every=2, patience=2)
    assert result.stopped_early and result.best_step == 4 and result.steps_run == 8
    assert model.weight.item() == 4.0


def test_augmentation_keeps_shape_and_is_seeded():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    first = augment_batch(images, torch.Generator().manual_seed(0), flip=True)
    second = augment_batch(images, torch.Generator().manual_seed(0), flip=True)
    assert first.shape == images.shape and first.dtype == torch.uint8 and torch.equal(first, second)
    unshifted = augment_batch(images, torch.Generator().manual_seed(0), flip=False, pad=0)
    assert torch.equal(unshifted, images)


def test_cutout_zeroes_one_clipped_square_per_image():
    images = torch.ones(64, 3, 32, 32)
    cut = cutout_batch(images, torch.Generator().manual_seed(0), size=16)
    assert torch.equal(images, torch.ones(64, 3, 32, 32))  # the input is left as it was
    zeroed = cut[:, 0] == 0
    assert torch.equal(zeroed, (cut == 0).all(1))  # every channel of a pixel together
    for mask in zeroed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert int(mask.sum()) == len(rows) * len(cols)  # one rectangle
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16  # a 16-square, clipped by at most half
    assert len({int(mask.sum()) for mask in zeroed}) > 1  # some squares clipped at the border
    assert torch.equal(cut, cutout_batch(images, torch.Generator().manual_seed(0), size=16))


def test_cutout_is_off_by_default_and_leaves_old_cache_keys_alone():
    assert "cutout" not in PretrainBudget().record()
    default = PretrainBudget()
    assert all(getattr(default, name) == value for name, value in FIELDS_ADDED_TO_KEYS.items())
    assert PretrainBudget(cutout=8).record()["cutout"] == 8


def test_pretraining_batches_carry_the_budgets_cutout():
    dataset = synthetic_dataset()

    def zeroed_pixels(cutout: int) -> int:
        sample = _training_batches(dataset, PretrainBudget(batch_size=16, translate=0, cutout=cutout),
                                   torch.Generator().manual_seed(0), torch.device("cpu"), 0.1)
        return int((sample()[0] == 0).all(1).sum())

    assert zeroed_pixels(0) == 0 and zeroed_pixels(8) >= 16 * 4 * 4


def test_auto_device_picks_what_is_available():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("backbone", ["cnn4", "cnn8"])
def test_recalibration_configs_use_every_batchnorm_pair(backbone):
    model = GroupedCNN(BACKBONES[backbone], 3, 10, k=3)
    generator = torch.Generator().manual_seed(0)
    configs = pair_covering_configs(model, generator)
    for layer in range(1, model.num_decisions):
        pairs = {(config[layer - 1], config[layer]) for config in configs}
        assert pairs == {(a, b) for a in (1, 2, 3) for b in (1, 2, 3)}
    recalibrate_batchnorm(model, lambda: torch.randn(4, 3, 32, 32), batches=1, generator=generator)
    assert all(int(norm.num_batches_tracked) > 0 for norms in model.norms for norm in norms)


def test_pretrain_budget_splits_its_steps_between_the_two_phases():
    budget = PretrainBudget(steps=10, full_width_fraction=0.3)
    assert (budget.full_width_steps, budget.sandwich_steps) == (3, 7)
    assert PretrainBudget(steps=1).sandwich_steps == 1  # the sandwich phase always runs
    assert PretrainBudget(steps=5, full_width_fraction=0.0).full_width_steps == 0
    for bad in ({"steps": 0}, {"full_width_fraction": 1.0}, {"full_width_fraction": -0.1}, {"label_smoothing": 1.0},
                {"warmup_fraction": -0.1}, {"translate": -1}, {"cutout": -1}, {"precision": "fp16"}):
        with pytest.raises(ValueError):
            PretrainBudget(**bad)


def test_prefix_batchnorms_start_from_the_full_width_slice():
    torch.manual_seed(0)
    model = GroupedCNN(BACKBONES["cnn4"], 3, 10, k=4)
    with torch.no_grad():
        for norms in model.norms:
            for norm in norms:
                for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                    tensor.uniform_(0.5, 1.5)
    pretraining.start_prefixes_from_full_width(model)
    for layer, norms in enumerate(model.norms):
        full = norms[model.norm_index(layer, 4 if layer >= 2 else 1, 4)]
        assert full.num_features == BACKBONES["cnn4"].widths[layer]
        for norm in norms:
            width = norm.num_features
            for name in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(getattr(norm, name), getattr(full, name)[:width])


def test_full_width_phase_trains_only_the_full_network_first(monkeypatch):
    """With a full-width phase, the first steps never run a narrow configuration."""
    seen = []
    original = pretraining.sandwich_step
    monkeypatch.setattr(pretraining, "sandwich_step", lambda *args: seen.append("sandwich") or original(*args))
    dataset = synthetic_dataset()
    model = GroupedCNN(BACKBONES["cnn4"], dataset.image_shape[0], dataset.num_classes, k=4)
    metrics = pretraining.pretrain_grouped_cnn(model, dataset, PretrainBudget(steps=4, eval_every=2), 0,
                                            torch.device("cpu"))
    assert seen == ["sandwich"] * 2 and metrics["best_step"] in (3, 4)


def test_loading_a_backbone_leaves_the_callers_random_stream_alone(fresh_process_cache):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrained_backbone(TINY, device="cpu")  # builds (seeds torch with the backbone's seed) and trains
    assert torch.equal(torch.rand(3), expected)


def test_one_cycle_schedule_warms_up_then_decays_to_zero_and_spares_batchnorm_from_decay():
    model = GroupedCNN(BACKBONES["cnn4"], 3, 10, k=2)
    budget = PretrainBudget(steps=10, lr=0.4, warmup_fraction=0.2)
    optimizer, schedule = pretraining._sgd_one_cycle(model, budget, 10, budget.lr)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([0.2, 0.4, 0.4])  # two warm-up steps, then the peak
    assert rates[2:] == sorted(rates[2:], reverse=True) and rates[-1] == pytest.approx(0.05)
    decayed, spared = optimizer.param_groups
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert all(parameter.dim() == 1 for parameter in spared["params"])  # BatchNorm scales/shifts, biases


def test_sandwich_phase_peaks_at_its_fraction_of_the_learning_rate(monkeypatch):
    """The sandwich phase restarts the schedule from trained weights; at the full peak it undid the
    full-width phase, so it peaks at ``lr · sandwich_lr_fraction``."""
    peaks = []
    original = pretraining._sgd_one_cycle
    monkeypatch.setattr(pretraining, "_sgd_one_cycle",
                        lambda model, budget, steps, peak_lr: peaks.append(peak_lr) or original(model, budget, steps,
                                                                                                   peak_lr))
    dataset = synthetic_dataset()
    model = GroupedCNN(BACKBONES["cnn4"], dataset.image_shape[0], dataset.num_classes, k=2)
    pretraining.pretrain_grouped_cnn(model, dataset, PretrainBudget(steps=4, lr=0.4, sandwich_lr_fraction=0.25), 0,
                                     torch.device("cpu"))
    assert peaks == pytest.approx([0.4, 0.1])


def test_sandwich_step_averages_its_losses_instead_of_summing_them():
    """Regression: summed, the four losses gave the first group's weights 4× the full-width step,
    and at lr 0.4 every width of the CIFAR-10 backbone fell to chance on the 5k subset."""
    dataset = synthetic_dataset()
    model = GroupedCNN(BACKBONES["cnn4"], dataset.image_shape[0], dataset.num_classes, k=2)
    images = (dataset.x_train[:8].float() / 255 - 0.5)
    labels = dataset.y_train[:8]
    pretraining.sandwich_step(model, images, labels, torch.Generator().manual_seed(0), random_configs=2)
    averaged = [parameter.grad for parameter in model.parameters()]  # None: a BN pair no configuration used
    model.zero_grad(set_to_none=True)
    full_logits = model(images)
    losses = [torch.nn.functional.cross_entropy(full_logits, labels)]
    soft_targets = full_logits.detach().softmax(dim=1)
    mixes = pretraining.random_width_mixes(model, 2, torch.Generator().manual_seed(0)).tolist()
    losses += [torch.nn.functional.cross_entropy(model(images, config), soft_targets)
               for config in [[1] * model.num_decisions, *mixes]]
    (sum(losses) / len(losses)).backward()
    for got, parameter in zip(averaged, model.parameters()):
        assert (got is None) == (parameter.grad is None)
        if got is not None:
            torch.testing.assert_close(got, parameter.grad)


def test_an_fp32_budget_keeps_the_cache_key_it_had_before_precision_existed():
    """The key of every fp32 budget (and the shipped weights matched on it) must not move; only a
    bf16 budget names its precision, so its weights are cached apart."""
    dataset = synthetic_dataset()
    key = cache_key(TINY, dataset)
    assert "precision" not in key["budget"]
    bf16 = BackboneRequest("synthetic", budget=PretrainBudget(steps=3, eval_every=3, precision="bf16"))
    assert cache_key(bf16, dataset)["budget"]["precision"] == "bf16"
    assert cache_path(cache_key(bf16, dataset)) != cache_path(key)


@pytest.mark.parametrize("backbone", ["cnn4", "resnet20"])
def test_bf16_pretraining_runs_the_forward_passes_in_bfloat16_and_keeps_fp32_weights(backbone):
    dataset = synthetic_dataset()
    request = BackboneRequest("synthetic", backbone=backbone, k=1 if backbone == "resnet20" else 2,
                              budget=PretrainBudget(steps=2, eval_every=2, batch_size=16, precision="bf16"))
    model = pretraining.build_backbone(request, dataset)
    logits_dtypes = set()
    model.register_forward_hook(lambda _module, _inputs, output: logits_dtypes.add(output.dtype))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    metrics = pretraining.pretrain_backbone(model, request, dataset, torch.device("cpu"))
    assert logits_dtypes == {torch.bfloat16, torch.float32}  # training steps; evaluation stays fp32
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    assert all(0.0 <= value <= 1.0 for name, value in metrics.items() if name.startswith("val_accuracy"))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_pretraining_on_a_cpu_that_only_emulates_it_warns(monkeypatch, caplog, fresh_process_cache, native):
    """On an AVX2-only CPU bf16 autocast trained 8× slower than fp32: a user asking for it there is
    told so before training starts, and still gets what the request names (the precision is part
    of the cache key)."""
    monkeypatch.setattr(pretraining, "cpu_has_native_bf16", lambda: native)
    request = BackboneRequest("synthetic", budget=PretrainBudget(steps=1, batch_size=8, precision="bf16"))
    with caplog.at_level("WARNING", logger="prune_gym"):
        pretrained_backbone(request, device="cpu")
        pretrained_backbone(TINY, device="cpu")  # fp32: never warned about
    emulated = [record for record in caplog.records if "emulated" in record.message]
    assert len(emulated) == (0 if native else 1)
    assert not pretraining.warn_if_bf16_is_emulated("bf16", torch.device("cuda"))


# ----------------------------------------------------------------------------------------------
# Resuming a killed pretraining run
# ----------------------------------------------------------------------------------------------


class Killed(Exception):
    """Stands in for a kill: raised from inside a training step."""


def _count_calls(monkeypatch, owner, name: str, kill_at: int | None = None) -> list:
    """Count calls of ``owner.<name>`` (a list gains an entry per call); raise :class:`Killed` on
    call ``kill_at``."""
    original, calls = getattr(owner, name), []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _save_every_step(monkeypatch) -> None:
    def every_step(key, path):
        return pretraining.LoopCheckpoint(path.with_name(f"{path.stem}.partial.pt"), key, every_s=0.0)

    monkeypatch.setattr(pretraining, "pretraining_checkpoint", every_step)


@pytest.mark.parametrize("backbone, step_function, kill_at", [
    ("cnn4", "full_width_step", 4),  # killed in the full-width phase
    ("cnn4", "sandwich_step", 3),  # killed in the sandwich phase, after the full-width phase finished
    ("resnet20", "cross_entropy", 6),  # the plain classifier's one phase (its step calls F.cross_entropy)
])
def test_a_killed_pretraining_resumes_to_the_weights_of_an_uninterrupted_run(fresh_process_cache, monkeypatch,
                                                                              backbone, step_function, kill_at):
    budget = PretrainBudget(steps=10, eval_every=4, batch_size=8)
    request = BackboneRequest("synthetic", backbone=backbone, k=1 if backbone == "resnet20" else 4, budget=budget)
    key = cache_key(request, synthetic_dataset())
    owner = pretraining.F if step_function == "cross_entropy" else pretraining
    _save_every_step(monkeypatch)  # so the kill loses nothing and the resumed run must continue exactly
    calls = _count_calls(monkeypatch, owner, step_function)
    uninterrupted, metrics, _ = pretrained_backbone(request, device="cpu")
    expected = {name: tensor.clone() for name, tensor in uninterrupted.state_dict().items()}
    uninterrupted_calls = len(calls)
    cache_path(key).unlink()
    monkeypatch.undo()

    _save_every_step(monkeypatch)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(fresh_process_cache))
    _count_calls(monkeypatch, owner, step_function, kill_at)
    with pytest.raises(Killed):
        pretrained_backbone(request, device="cpu")
    assert list(fresh_process_cache.glob("*.partial*.pt")) and not cache_path(key).exists()
    monkeypatch.undo()

    _save_every_step(monkeypatch)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(fresh_process_cache))
    calls = _count_calls(monkeypatch, owner, step_function)
    resumed, metrics_resumed, _ = pretrained_backbone(request, device="cpu")
    assert len(calls) == uninterrupted_calls - (kill_at - 1)  # it continued; it did not start over
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert {key: value for key, value in metrics_resumed.items() if key != "train_wall_s"} == \
        {key: value for key, value in metrics.items() if key != "train_wall_s"}
    assert cache_path(key).is_file() and not list(fresh_process_cache.glob("*.partial*.pt"))  # cleaned up


def test_a_checkpoint_of_another_run_is_ignored_with_a_warning(tmp_path):
    model = nn.Linear(2, 1)
    checkpoint = pretraining.LoopCheckpoint(tmp_path / "run.partial.pt", {"seed": 0}, every_s=0.0)
    train_loop(model, lambda step: 0.5, lambda: {"score": 0.0}, steps=3, eval_every=3, checkpoint=checkpoint)
    other = pretraining.LoopCheckpoint(checkpoint.path, {"seed": 1}, every_s=0.0)
    steps_run = []
    with pytest.warns(WeightsCacheWarning, match="another run"):
        train_loop(model, lambda step: steps_run.append(step) or 0.5, lambda: {"score": 0.0}, steps=3, eval_every=3,
                   checkpoint=other)
    assert steps_run == [1, 2, 3]  # started over


def test_a_finished_checkpoint_returns_its_result_without_training(tmp_path):
    model = nn.Linear(2, 1)
    checkpoint = pretraining.LoopCheckpoint(tmp_path / "run.partial.pt", {"seed": 0}, every_s=1e9)
    first = train_loop(model, lambda step: 0.5, lambda: {"score": 0.25}, steps=4, eval_every=2, checkpoint=checkpoint)
    again = train_loop(model, lambda step: pytest.fail("trained again"), lambda: {"score": 0.0}, steps=4,
                       eval_every=2, checkpoint=checkpoint)
    assert again.history == first.history and again.best_step == first.best_step == 2
