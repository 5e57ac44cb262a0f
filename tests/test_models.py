"""CIFAR-style ResNets registered with timm, and the model factory."""

from __future__ import annotations

import pytest
import timm
import torch
from omegaconf import OmegaConf

from lepton_exp.config.schemas import ModelConfig
from lepton_exp.data import DataInfo
from lepton_exp.errors import ConfigError
from lepton_exp.measure import count_parameters, model_size_bytes
from lepton_exp.models import CIFAR_MODEL_NAMES, build_model

# Parameter counts of the CIFAR-100 variants as tabulated by CRD (Tian et al., 2020, Table 1
# and its code base), in millions: an architecture bug changes these.
PUBLISHED_MILLIONS = {"resnet8": 0.08, "resnet14": 0.18, "resnet20": 0.28, "resnet32": 0.47,
                      "resnet44": 0.67, "resnet56": 0.86, "resnet110": 1.74, "resnet8x4": 1.23,
                      "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_cifar_models_match_published_sizes(name):
    model = timm.create_model(name, num_classes=100)
    assert count_parameters(model) / 1e6 == pytest.approx(PUBLISHED_MILLIONS[name], abs=0.011)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "resnet8x4"])
def test_cifar_models_support_timm_features_only(name):
    extractor = timm.create_model(name, features_only=True)
    features = extractor(torch.randn(2, 3, 32, 32))
    assert [f.shape[1] for f in features] == extractor.feature_info.channels()
    assert [32 // f.shape[-1] for f in features] == extractor.feature_info.reduction()
    last_only = timm.create_model(name, features_only=True, out_indices=(3,))
    assert last_only(torch.randn(1, 3, 32, 32))[0].shape == features[-1][:1].shape


def test_all_cifar_names_registered():
    assert set(CIFAR_MODEL_NAMES) <= set(timm.list_models())


def test_pretrained_cifar_model_is_refused_not_silently_random():
    with pytest.raises(ConfigError, match="model.pretrained=false"):
        build_model(OmegaConf.structured(ModelConfig(name="resnet20", pretrained=True)),
                    DataInfo(10, 3, 32))


def test_unknown_model_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean .*resnet20"):
        build_model(OmegaConf.structured(ModelConfig(name="resnet200x")), DataInfo(10, 3, 32))


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "mobilenetv3_small_100"])
def test_factory_takes_classes_and_channels_from_data(name):
    model = build_model(OmegaConf.structured(ModelConfig(name=name)), DataInfo(7, 1, 32))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_model_size_counts_parameters_and_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    # Linear 3*2+2, BN weight+bias 2+2, running mean/var 2+2 floats, num_batches_tracked int64
    assert model_size_bytes(model) == (8 + 4 + 4) * 4 + 8


def test_a_teacher_file_with_other_class_names_than_the_data_is_refused(tmp_path):
    import pytest
    from torch import nn

    from lepton_exp.data.base import DataInfo
    from lepton_exp.errors import ConfigError
    from lepton_exp.models import check_class_names, data_metadata, save_weights

    path = tmp_path / "model.safetensors"
    save_weights(nn.Linear(2, 2), path, data_metadata({"class_names": ["neg", "pos"]}))
    check_class_names(path, DataInfo(2, class_names=("neg", "pos")), "teacher.checkpoint")
    check_class_names(path, DataInfo(2), "teacher.checkpoint")  # unnamed data: nothing to check
    with pytest.raises(ConfigError, match=r"teacher.checkpoint=.* outputs the classes neg, pos, "
                                          r"but the data's are pos, neg: use the data"):
        check_class_names(path, DataInfo(2, class_names=("pos", "neg")), "teacher.checkpoint")
