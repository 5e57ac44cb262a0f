"""Data modules: deterministic stratified splits, augmentation switch, CIFAR loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lepton_exp.data import build_datamodule
from lepton_exp.data.base import Split
from lepton_exp.data.sets import cifar10, digits, synthetic
from lepton_exp.errors import ConfigError


def _dm(schema, **values):
    return build_datamodule(OmegaConf.structured(schema(**values)))


def _ids(split) -> set:
    # Images are unique in digits: hash each one to compare splits by content.
    return {hash(image.numpy().tobytes()) for image in split.images}


def test_digits_splits_are_disjoint_stratified_and_complete():
    dm = _dm(digits.Schema, name="digits", val_size=0.1, test_size=0.2)
    dm.setup()
    sizes = len(dm.train), len(dm.val), len(dm.test)
    assert sum(sizes) == 1797 and sizes[2] == 360
    assert not (_ids(dm.train) & _ids(dm.test)) and not (_ids(dm.train) & _ids(dm.val))
    for split in (dm.train, dm.val, dm.test):
        counts = torch.bincount(split.labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.85  # every class present in proportion
    assert dm.info.num_classes == 10 and dm.info.in_chans == 1 and dm.info.image_size == 8


def test_splits_are_deterministic_given_split_seed():
    first, again, other = (_dm(digits.Schema, name="digits", split_seed=s) for s in (0, 0, 1))
    for dm in (first, again, other):
        dm.setup()
    assert torch.equal(first.test.labels, again.test.labels)
    assert _ids(first.test) == _ids(again.test)
    assert _ids(first.test) != _ids(other.test)


def test_train_subset_is_stratified_and_may_keep_almost_everything():
    dm = _dm(digits.Schema, name="digits", train_subset=100)
    dm.setup()
    assert len(dm.train) == 100
    assert torch.bincount(dm.train.labels, minlength=10).min() >= 9
    full = _dm(digits.Schema, name="digits")
    full.setup()
    nearly = _dm(digits.Schema, name="digits", train_subset=len(full.train) - 2)
    nearly.setup()
    assert len(nearly.train) == len(full.train) - 2
    assert _ids(nearly.train) <= _ids(full.train)


def _forty_images():
    """CIFAR's transforms over 40 random images, no files: in place of the npz loader."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return Split(images, torch.arange(40) % 10), Split(images[:10], torch.arange(10))


def test_augmentation_switch():
    def make(augment):
        dm = _dm(cifar10.Schema, name="cifar10", augment=augment, val_size=10)
        dm.load = _forty_images
        dm.setup()
        return dm

    augmented, plain = make(True), make(False)
    sample = augmented.train.images[0]
    torch.manual_seed(0)
    assert len({augmented.train_transform()(sample).sum().item() for _ in range(8)}) > 1
    assert len({plain.train_transform()(sample).sum().item() for _ in range(4)}) == 1
    normalised = plain.eval_transform()(sample)
    mean = torch.tensor(plain.mean).view(3, 1, 1)
    std = torch.tensor(plain.std).view(3, 1, 1)
    assert torch.allclose(normalised, (sample.float() / 255 - mean) / std, atol=1e-6)


def test_synthetic_is_deterministic_and_learnable_shape():
    a = _dm(synthetic.Schema, name="synthetic", num_classes=3, channels=2, image_size=8)
    b = _dm(synthetic.Schema, name="synthetic", num_classes=3, channels=2, image_size=8)
    a.setup(), b.setup()
    assert torch.equal(a.train.images, b.train.images)
    assert a.info.num_classes == 3 and a.info.in_chans == 2 and a.info.image_size == 8
    images, labels = next(iter(a.train_dataloader()))
    assert images.shape == (a.cfg.batch_size, 2, 8, 8) and images.dtype == torch.float32


def _write_npz(path, count, num_classes=10):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
             y=np.arange(count) % num_classes)


def test_cifar_npz_layout(tmp_path):
    _write_npz(tmp_path / "train.npz", 200)
    _write_npz(tmp_path / "test.npz", 50)
    dm = _dm(cifar10.Schema, name="cifar10", root=str(tmp_path), val_size=20)
    dm.setup()
    assert (len(dm.train), len(dm.val), len(dm.test)) == (180, 20, 50)
    assert dm.train.images.shape[1:] == (3, 32, 32) and dm.train.images.dtype == torch.uint8


def test_cifar_missing_root_says_what_to_set(tmp_path):
    dm = _dm(cifar10.Schema, name="cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="set data.root"):
        dm.setup()


def test_cifar_malformed_npz_is_named(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.zeros((4, 32, 32, 3), np.uint8))
    _write_npz(tmp_path / "test.npz", 10)
    with pytest.raises(ConfigError, match="must hold arrays 'x'"):
        _dm(cifar10.Schema, name="cifar10", root=str(tmp_path)).setup()
    (tmp_path / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable npz"):
        _dm(cifar10.Schema, name="cifar10", root=str(tmp_path)).setup()


def test_real_cifar10_from_shared_data(cifar10_dir):
    dm = _dm(cifar10.Schema, name="cifar10", root=str(cifar10_dir), val_size=5000,
             train_subset=2000, test_subset=1000)
    dm.setup()
    assert (len(dm.train), len(dm.val), len(dm.test)) == (2000, 5000, 1000)
    assert torch.bincount(dm.test.labels).tolist() == [100] * 10
    images = torch.cat([batch for batch, _ in dm.val_dataloader()])
    assert images.shape == (5000, 3, 32, 32)
    # Normalised with CIFAR statistics: about zero mean and unit spread per channel.
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert ((images.std(dim=(0, 2, 3)) - 1).abs() < 0.1).all()


def test_cifar100_pointed_at_cifar10_files_is_refused(tmp_path):
    _write_npz(tmp_path / "train.npz", 200)
    _write_npz(tmp_path / "test.npz", 50)
    with pytest.raises(ConfigError, match="has 10 classes .* CIFAR-100 has 100"):
        _dm(cifar10.Schema, name="cifar100", root=str(tmp_path), val_size=20).setup()


@pytest.mark.parametrize("settings,key", [
    (dict(val_size=2), "data.val_size=2"),          # fewer held-out samples than classes
    (dict(val_size=0.999), "data.val_size=0.999"),  # too few left to train on
    (dict(train_subset=5), "data.train_subset=5"),
])
def test_impossible_splits_name_the_setting(settings, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _dm(digits.Schema, name="digits", **settings).setup()
