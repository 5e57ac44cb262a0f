"""The CIFAR architectures of CRD's table beyond the ResNets (VGG, MobileNetV2, ShuffleNet
V1/V2, ResNet-50): the reference code's sizes, feature taps, pre-activations and BatchNorms
(tests/test_models.py checks the ResNets' and WRNs' sizes)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import lepton_exp.models  # noqa: F401 - registers every CIFAR architecture with timm
from lepton_exp.measure import count_parameters
from lepton_exp.models.families import _cifar
from lepton_exp.models.families.cifar_shufflenet import ShuffleV2Unit
from lepton_exp.models.taps import Tapper

# name -> (channels, spatial size) of each tap on 32x32 inputs, as the reference's is_feat
# features (RepDistiller models/*.py) have them: stem first, without the pooled vector.
REFERENCE_TAPS = {
    "vgg8": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)],
    "vgg13_cifar": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)],
    "mobile_half": [(16, 16), (12, 16), (16, 8), (48, 4), (160, 2)],
    "shufflev1": [(24, 32), (240, 16), (480, 8), (960, 4)],
    "shufflev2": [(24, 32), (116, 16), (232, 8), (464, 4)],
    "resnet50_cifar": [(64, 32), (256, 32), (512, 16), (1024, 8), (2048, 4)],
}
# Parameter counts for CIFAR-100 as tabulated by CRD (Tian et al., 2020) and DKD (Zhao et al.,
# 2022), in millions: an architecture bug changes these.
PUBLISHED_MILLIONS = {"vgg8": 3.96, "vgg13_cifar": 9.46, "mobile_half": 0.81, "shufflev1": 0.95,
                      "shufflev2": 1.36, "resnet50_cifar": 23.71}
# Where the reference has get_bn_before_relu (ShuffleNets: none), one per stage after the stem.
BN_STAGES = {"vgg8": 4, "vgg13_cifar": 4, "mobile_half": 4, "shufflev1": 0, "shufflev2": 0,
             "resnet50_cifar": 4, "resnet8": 3, "wrn_16_2": 3}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches gain nothing from threads, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _taps_and_preacts(model: nn.Module, images: torch.Tensor):
    """Every tap, and the input of every ``preact_module`` (None where none is declared)."""
    preacts: dict[int, torch.Tensor] = {}
    handles = []
    for index, entry in enumerate(model.feature_info):
        if "preact_module" in entry:
            def hook(module, inputs, index=index):
                preacts[index] = inputs[0].clone()  # the ReLU may work in place
            handles.append(model.get_submodule(entry["preact_module"])
                           .register_forward_pre_hook(hook))
    taps = Tapper(model)(images)
    for handle in handles:
        handle.remove()
    return taps, [preacts.get(index) for index in range(len(model.feature_info))]


@pytest.mark.parametrize("name", sorted(REFERENCE_TAPS))
def test_published_size_and_the_reference_taps(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100).eval()
    assert count_parameters(model) / 1e6 == pytest.approx(PUBLISHED_MILLIONS[name], abs=0.011)
    images = torch.randn(2, 3, 32, 32)
    taps, preacts = _taps_and_preacts(model, images)
    assert taps.logits.shape == (2, 100)
    assert [(f.shape[1], f.shape[-1]) for f in taps.features] == REFERENCE_TAPS[name]
    for index, (feature, preact) in enumerate(zip(taps.features, preacts, strict=True)):
        if preact is None:  # no ReLU ends the tap (MobileNetV2's linear bottlenecks)
            assert name == "mobile_half" and index > 0
        elif name == "shufflev2" and index > 0:  # the reference's pre-activation is unshuffled
            assert torch.allclose(model.get_submodule(f"layer{index}")[-1].shuffle(
                preact.relu()), feature)
        else:
            assert preact.min() < 0 and torch.allclose(preact.relu(), feature)


@pytest.mark.parametrize("name", sorted(BN_STAGES))
def test_bn_before_relu_names_the_stage_batchnorm_of_the_reference(name):
    model = timm.create_model(name, num_classes=10)
    named = [entry for entry in model.feature_info if "bn_before_relu" in entry]
    assert "bn_before_relu" not in model.feature_info[0]  # the reference lists stages only
    assert len(named) == BN_STAGES[name]
    for entry in named:
        batchnorm = model.get_submodule(entry["bn_before_relu"])
        assert isinstance(batchnorm, nn.BatchNorm2d)
        assert batchnorm.num_features == entry["num_chs"]
    for entry in model.feature_info:
        if "preact_module" in entry:
            assert isinstance(model.get_submodule(entry["preact_module"]), nn.ReLU)


def test_wrn_preact_is_the_next_blocks_batchnorm_of_the_stage_output():
    # RepDistiller's wrn.py: preact f1 = block2.layer[0].bn1(f1), ..., f3 = bn1(f3).
    model = timm.create_model("wrn_16_2", num_classes=10).eval()
    taps, preacts = _taps_and_preacts(model, torch.randn(2, 3, 32, 32))
    batchnorms = [model.layer2[0].bn1, model.layer3[0].bn1, model.bn1]
    assert preacts[0] is None
    for feature, preact, batchnorm in zip(taps.features[1:], preacts[1:], batchnorms,
                                          strict=True):
        assert torch.allclose(preact, batchnorm(feature))


def test_resnet_preact_is_the_last_blocks_sum_before_its_relu():
    model = timm.create_model("resnet8", num_classes=10).eval()
    taps, preacts = _taps_and_preacts(model, torch.randn(2, 3, 32, 32))
    block, stage_input = model.layer3[-1], taps.features[2]
    inner = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(stage_input)))))
    assert torch.allclose(preacts[3], inner + block.downsample(stage_input), atol=1e-6)


def test_shufflev2_unit_relu_of_the_passed_half_changes_nothing():
    # ShuffleV2Unit ReLUs the concatenation; the reference only the branch. Equal on inputs
    # >= 0, which every unit gets (each unit, and the down-sampling one, ends in ReLUs).
    torch.manual_seed(0)
    unit = ShuffleV2Unit(8).eval()
    inputs = torch.randn(2, 8, 4, 4).relu()
    branch = unit.bn3(unit.conv3(unit.bn2(unit.conv2(unit.act1(unit.bn1(unit.conv1(
        inputs[:, 4:])))))))
    assert branch.min() < 0
    assert torch.allclose(unit(inputs), unit.shuffle(torch.cat([inputs[:, :4], branch.relu()], 1)))


@pytest.mark.parametrize("name", sorted(REFERENCE_TAPS))
def test_timm_features_only_builds_with_the_extra_feature_info_keys(name):
    extractor = timm.create_model(name, features_only=True, in_chans=1)
    features = extractor(torch.randn(1, 1, 32, 32))
    assert [(f.shape[1], f.shape[-1]) for f in features] == REFERENCE_TAPS[name]
    assert extractor.feature_info.channels() == [c for c, _ in REFERENCE_TAPS[name]]


def test_cifar_names_leave_timms_imagenet_models_alone():
    assert timm.models.model_entrypoint("resnet50").__module__ == "timm.models.resnet"
    assert timm.models.model_entrypoint("vgg13").__module__ == "timm.models.vgg"
    assert set(REFERENCE_TAPS) <= set(lepton_exp.models.CIFAR_MODEL_NAMES)
    with pytest.raises(RuntimeError, match=r"timm already defines \['resnet18'\]"):
        _cifar.register("tests", {"resnet18": (nn.Module, {})}, out_indices=(0,))
    with pytest.raises(RuntimeError, match="shufflev1.*which .*cifar_shufflenet already did"):
        _cifar.register("tests", {"shufflev1": (nn.Module, {})}, out_indices=(0,))


def test_classifier_interface_uses_the_reference_layer_names():
    model = timm.create_model("shufflev2", num_classes=10)
    assert model.get_classifier() is model.linear
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert timm.create_model("vgg8").pretrained_cfg["classifier"] == "classifier"
    with pytest.raises(ValueError, match="model.pretrained=false"):
        timm.create_model("mobile_half", pretrained=True)
