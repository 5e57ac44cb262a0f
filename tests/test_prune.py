"""Pruning functions without Lightning: measured sparsity, masks that hold through training,
global vs layer-wise, structured models that are really smaller, the cubic schedule."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import lepton_exp.models  # noqa: F401 - registers the CIFAR ResNets with timm
from lepton_exp.measure import (
    count_macs,
    latency_ms,
    size_bytes,
    sparse_tensor_bytes,
    sparsity_report,
)
from lepton_exp.prune.channel import prune_channels
from lepton_exp.prune.magnitude import make_permanent, masks, prune_unstructured
from lepton_exp.prune.schedule import cubic_sparsity
from lepton_exp.prune.targets import first_and_last, prunable_layers


def resnet8(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet8", num_classes=10)


def layer_sparsity(module: nn.Module) -> float:
    return float((module.weight == 0).float().mean())


def expected_model_sparsity(model: nn.Module, sparsity: float) -> float:
    """The requested sparsity diluted by the dense first conv and classifier."""
    pruned = sum(m.weight.numel() for m in prunable_layers(model).values())
    every = sum(m.weight.numel() for m in prunable_layers(model, skip=()).values())
    return sparsity * pruned / every


def test_cubic_schedule_follows_zhu_and_gupta():
    assert cubic_sparsity(0, 0.0, 0.8, 10, 110) == 0.0
    assert cubic_sparsity(10, 0.0, 0.8, 10, 110) == 0.0
    assert cubic_sparsity(60, 0.0, 0.8, 10, 110) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert cubic_sparsity(110, 0.0, 0.8, 10, 110) == 0.8
    assert cubic_sparsity(500, 0.1, 0.8, 10, 110) == 0.8
    values = [cubic_sparsity(step, 0.0, 0.8, 0, 100) for step in range(0, 101, 10)]
    assert values == sorted(values)  # monotone, steepest at the start
    assert values[1] - values[0] > values[-1] - values[-2]


def test_first_conv_and_classifier_are_kept_dense_by_default():
    model = resnet8()
    assert first_and_last(model) == ["conv1", "fc"]
    layers = prunable_layers(model)
    assert "conv1" not in layers and "fc" not in layers and "layer1.0.conv1" in layers
    assert set(prunable_layers(model, skip=())) >= {"conv1", "fc"}


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_layerwise_pruning_gives_each_layer_the_requested_sparsity(method):
    model = resnet8()
    layers = prunable_layers(model)
    prune_unstructured(layers, 0.5, method=method, scope="layer")
    for name, module in layers.items():  # within one weight of rounding
        assert layer_sparsity(module) == pytest.approx(0.5, abs=1 / module.weight.numel()), name
    assert layer_sparsity(model.conv1) == 0.0 and layer_sparsity(model.fc) == 0.0
    report = sparsity_report(model)
    assert report["sparsity"] == pytest.approx(expected_model_sparsity(model, 0.5), abs=1e-3)
    assert report["layer_sparsity"]["layer1.0.conv1"] == pytest.approx(0.5, abs=1e-3)


def test_magnitude_pruning_removes_the_smallest_weights():
    model = resnet8()
    module = model.layer2[0].conv1
    original = module.weight.detach().abs().clone()
    prune_unstructured({"conv": module}, 0.7)
    kept = module.weight_mask.bool()
    assert original[~kept].max() <= original[kept].min()


def test_global_pruning_hits_the_total_but_spreads_it_unevenly():
    model = resnet8()
    layers = prunable_layers(model)
    prune_unstructured(layers, 0.6, scope="global")
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros / total == pytest.approx(0.6, abs=1 / total)
    per_layer = [layer_sparsity(m) for m in layers.values()]
    assert max(per_layer) - min(per_layer) > 0.05  # unlike layer-wise


def test_gradual_pruning_only_adds_zeros_and_masks_hold_through_training():
    model = resnet8()
    layers = prunable_layers(model)
    prune_unstructured(layers, 0.3)
    first = {name: m.weight_mask.clone() for name, m in layers.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
    prune_unstructured(layers, 0.6)
    for name, module in layers.items():
        assert not (module.weight_mask.bool() & ~first[name].bool()).any(), name  # no revival
        assert layer_sparsity(module) == pytest.approx(0.6, abs=2 / module.weight.numel())
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
    assert sparsity_report(model)["sparsity"] == pytest.approx(
        expected_model_sparsity(model, 0.6), abs=1e-3)


def test_make_permanent_keeps_outputs_and_zeros_and_drops_masks():
    model = resnet8().eval()
    prune_unstructured(prunable_layers(model), 0.5)
    images = torch.randn(2, 3, 32, 32)
    before = model(images)
    make_permanent(model)
    assert masks(model) == {} and not any(n.endswith("_orig") for n in model.state_dict())
    assert torch.equal(model(images), before)
    assert sparsity_report(model)["sparsity"] == pytest.approx(
        expected_model_sparsity(model, 0.5), abs=1e-3)


def test_sparse_storage_and_parameter_counts_are_measured():
    model = resnet8()
    dense = size_bytes(model)
    prune_unstructured(prunable_layers(model), 0.9)
    report, pruned = sparsity_report(model), size_bytes(model)
    assert pruned["dense_bytes"] == dense["dense_bytes"]  # masks are not counted
    assert pruned["sparse_bytes"] < 0.4 * dense["sparse_bytes"]
    # Bitmap format: 4 bytes per non-zero float32 plus one bit per element.
    weight = model.layer1[0].conv1.weight
    assert sparse_tensor_bytes(weight) == int((weight != 0).sum()) * 4 + weight.numel() // 8
    assert sparse_tensor_bytes(torch.ones(64)) == 64 * 4  # dense when smaller
    assert report["params"] == sum(p.numel() for p in resnet8().parameters())
    assert report["nonzero_params"] < 0.2 * report["params"]


@pytest.mark.parametrize("name,input_size", [("resnet8", 32), ("mobilenetv3_small_100", 64)])
def test_channel_pruning_gives_a_smaller_dense_model_with_the_same_outputs_shape(name,
                                                                                 input_size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    images = torch.randn(2, 3, input_size, input_size)
    params, macs = sum(p.numel() for p in model.parameters()), count_macs(model, images)
    prune_channels(model, images, 0.5, ignored=[model.get_classifier()])
    pruned_params = sum(p.numel() for p in model.parameters())
    assert pruned_params < 0.5 * params  # both sides of a conv shrink: ~(1 - 0.5)^2
    assert count_macs(model, images) < 0.5 * macs
    assert model.eval()(images).shape == (2, 10)
    assert sparsity_report(model)["sparsity"] == pytest.approx(0.0, abs=1e-3)  # dense


def test_bn_scale_importance_prunes_the_channels_with_the_smallest_scales():
    model = resnet8().eval()
    bn = model.layer1[0].bn1
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1, 17, dtype=torch.float))  # channel 0 smallest
    prune_channels(model, torch.randn(1, 3, 32, 32), 0.25, importance="bn",
                   ignored=[model.fc])
    assert model.layer1[0].bn1.weight.min() > 1.0  # the small-scale channels went


def test_macs_and_latency_are_measured():
    linear = nn.Linear(4, 3)
    assert count_macs(linear, torch.randn(2, 4)) == 2 * 4 * 3
    assert latency_ms(linear, torch.randn(2, 4), repeats=3) > 0


@pytest.mark.parametrize("name,input_size,kind", [
    ("resnet8", 32, "channel"), ("mobilenetv3_small_100", 64, "channel"),
    ("resnet8", 32, "magnitude")])
def test_export_then_reload_without_pruning_code_gives_identical_outputs(tmp_path, name,
                                                                        input_size, kind):
    from lepton_exp.prune.export import load_pruned, save_pruned

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    images = torch.randn(2, 3, input_size, input_size)
    if kind == "channel":
        prune_channels(model, images, 0.5, ignored=[model.get_classifier()])
    else:
        prune_unstructured(prunable_layers(model), 0.7)
    model.eval()
    expected = model(images)
    path = tmp_path / "pruned.safetensors"
    save_pruned(model, path, name, num_classes=10)
    rebuilt = load_pruned(path)
    assert torch.equal(rebuilt(images), expected)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in model.parameters())
    # The plain architecture cannot take a channel-pruned state dict: the rebuild is needed.
    if kind == "channel":
        with pytest.raises(RuntimeError, match="size mismatch"):
            timm.create_model(name, num_classes=10).load_state_dict(model.state_dict())


def test_gradual_pruning_follows_the_cubic_schedule_and_ends_at_the_target():
    from lepton_exp.prune.gradual import GradualPruning

    model = resnet8()
    layers = prunable_layers(model)
    gradual = GradualPruning(layers, initial=0.0, final=0.8, begin_step=0, end_step=100,
                             frequency=10)
    pruned = sum(m.weight.numel() for m in layers.values())
    for step in range(0, 60):
        gradual.update(step)
        zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
        expected = gradual.target(step - step % 10)  # the last due update
        assert zeros / pruned == pytest.approx(expected, abs=len(layers) / pruned), step
    gradual.on_train_end(None, None)  # stopped early: still finishes at the final sparsity
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros / pruned == pytest.approx(0.8, abs=len(layers) / pruned)


def test_compression_report_measures_the_pruned_model():
    from lepton_exp.measure import compression_report

    example = torch.randn(1, 3, 32, 32)
    dense = compression_report(resnet8(), example, latency_batch=4)
    model = resnet8()
    prune_channels(model, example, 0.5, ignored=[model.fc])
    pruned = compression_report(model, example, latency_batch=4)
    assert pruned["params"] < dense["params"] and pruned["macs"] < dense["macs"]
    assert pruned["dense_bytes"] < dense["dense_bytes"]
    for report in (dense, pruned):
        assert report["latency_ms_b1"] > 0 and report["latency_ms_b4"] > 0
        assert set(report["layer_sparsity"]) >= {"conv1", "fc"}


def test_latencies_are_timed_in_turns_so_a_slower_model_shows_up_slower():
    from lepton_exp.measure import latencies_ms

    class Slow(nn.Module):
        def __init__(self, seconds: float):
            super().__init__()
            self.seconds = seconds

        def forward(self, x):
            import time

            time.sleep(self.seconds)
            return x

    fast, slow = latencies_ms([Slow(0.001), Slow(0.004)], torch.zeros(1), repeats=5, warmup=1)
    assert fast >= 0.9 and slow >= 3.9 and slow / fast > 1.5
