"""The tap adapter: one interface over timm CNNs, the CIFAR ResNets and transformers."""

from __future__ import annotations

import pytest
import timm
import torch

from lepton_exp.errors import ConfigError
from lepton_exp.models.taps import Tapper


def test_cifar_resnet_taps_are_the_stem_and_three_stages_from_one_forward():
    model = timm.create_model("resnet8", num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    tapper = Tapper(model)
    taps = tapper(images)
    assert [tuple(f.shape[1:]) for f in taps.features] == [
        (16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert torch.allclose(taps.logits, model(images))
    # The same maps timm's features_only extraction gives.
    extractor = timm.create_model("resnet8", features_only=True).eval()
    extractor.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("fc.")})
    for tapped, expected in zip(taps.features, extractor(images), strict=True):
        assert torch.allclose(tapped, expected)


def test_timm_cnn_taps_follow_feature_info():
    model = timm.create_model("mobilenetv3_small_100", num_classes=10).eval()
    taps = Tapper(model)(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in taps.features] == [i["num_chs"] for i in model.feature_info]
    assert taps.logits.shape == (1, 10)


def test_hooks_capture_only_inside_the_tapper_and_can_be_removed():
    model = timm.create_model("resnet8", num_classes=10).eval()
    tapper = Tapper(model)
    model(torch.randn(1, 3, 32, 32))  # an ordinary forward: nothing kept
    assert tapper._captured == {}
    tapper.remove()
    assert not model.layer1._forward_hooks


def test_a_model_without_feature_info_gets_a_clear_error():
    with pytest.raises(ConfigError, match="declares no feature stages"):
        Tapper(torch.nn.Linear(4, 2))


@pytest.fixture
def tiny_bert():
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, num_labels=3,
                        max_position_embeddings=32)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager").eval()


def test_transformer_taps_hidden_states_attentions_and_scores(tiny_bert):
    inputs = {"input_ids": torch.randint(0, 50, (2, 7)),
              "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}
    tapper = Tapper(tiny_bert, features=True, attentions=True, scores=True)
    with torch.no_grad():
        taps = tapper(inputs)
    assert taps.logits.shape == (2, 3)
    assert len(taps.features) == 3  # embeddings + 2 layers
    assert all(h.shape == (2, 7, 32) for h in taps.features)
    assert [a.shape for a in taps.attentions] == [(2, 4, 7, 7)] * 2
    assert [s.shape for s in taps.scores] == [(2, 4, 7, 7)] * 2
    # Pre-softmax scores with padding masked out reproduce the returned probabilities.
    mask = inputs["attention_mask"][:, None, None, :] == 0
    for scores, attention in zip(taps.scores, taps.attentions, strict=True):
        probabilities = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        assert torch.allclose(probabilities, attention, atol=1e-5)
        assert (scores.masked_select(mask.expand_as(scores)) == 0).all()  # TinyBERT zeroing
