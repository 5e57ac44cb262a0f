"""Batch transforms of in-memory images: the same tensors as torchvision's per-sample pipeline,
bit for bit, whether made in the loader or on the device; a run with them trains and resumes
exactly as one without."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from lepton_exp.app.runner import run_stage
from lepton_exp.data.base import Split, sample_seed
from lepton_exp.data.batch_transforms import BatchTransform, RawImages, batch_equivalents
from lepton_exp.data.image import ImageBatches, ImageDataset

AUGMENT = [v2.RandomCrop(8, padding=2), v2.RandomHorizontalFlip()]
FINISH = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])])


def _split(count: int = 40) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return Split(images, torch.arange(count) % 10)


@pytest.mark.parametrize("with_index", [False, True])
def test_batches_equal_the_per_sample_pipeline_bit_for_bit(with_index):
    split = _split()
    per_sample = ImageDataset(split, v2.Compose([*AUGMENT, FINISH]), with_index=with_index,
                              random_transform=True)
    transform = BatchTransform(batch_equivalents(AUGMENT), FINISH, (8, 8))
    keys = [(index, sample_seed(7, 2, index)) for index in (5, 0, 39, 12, 12, 33, 8, 21)]
    expected = [torch.stack(column) for column in zip(*(
        tuple(torch.as_tensor(value) for value in per_sample[key]) for key in keys))]
    in_loader = ImageBatches(split, transform, with_index=with_index, random_transform=True)
    raw = ImageBatches(split, transform, with_index=with_index, random_transform=True,
                       on_device=True).__getitems__(keys)
    assert isinstance(raw, RawImages) and raw.images.dtype == torch.uint8  # as stored
    for batch in (in_loader.__getitems__(keys), transform(raw)):
        assert len(batch) == len(expected)
        assert all(torch.equal(got, want) for got, want in zip(batch, expected, strict=True))
    # the draws really vary: crops at several offsets, flipped and not
    choices = transform.choices([seed for _, seed in keys])
    assert len(set(choices[:, 0].tolist())) > 1 and set(choices[:, 2].tolist()) == {0, 1}


def test_evaluation_batches_are_normalised_only():
    split = _split()
    transform = BatchTransform(batch_equivalents(AUGMENT), FINISH, (8, 8))
    keys = [3, 1, 4, 1, 5]
    images, labels = ImageBatches(split, transform).__getitems__(keys)
    assert torch.equal(images, torch.stack([FINISH(split.images[i]) for i in keys]))
    assert torch.equal(labels, split.labels[keys])


@pytest.mark.parametrize("transforms", [
    [v2.ColorJitter(brightness=0.2)],
    [v2.RandomCrop(8, padding=2, padding_mode="reflect")],
    [v2.RandomCrop(8, padding=2, fill=128)],
    [v2.RandomHorizontalFlip(), v2.RandomRotation(10)],
])
def test_transforms_without_a_batch_form_stay_per_sample(transforms):
    assert batch_equivalents(transforms) is None


def test_the_data_module_picks_batches_for_memory_and_per_sample_otherwise(compose_cfg):
    from lepton_exp.data import build_datamodule

    cfg = compose_cfg("data=digits")
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    assert isinstance(datamodule.dataset(datamodule.train, train=True), ImageBatches)
    cfg.data.batch_transforms = False
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    assert isinstance(datamodule.dataset(datamodule.train, train=True), ImageDataset)


CIFAR = ["data=cifar10", "data.train_subset=300", "data.val_size=100", "data.test_subset=100",
         "model=resnet8", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=none"]


def test_cifar_training_is_the_same_with_and_without_batch_transforms(compose_cfg, tmp_path,
                                                                       cifar10_dir):
    metrics = {}
    for batch_transforms in (True, False):
        cfg = compose_cfg(*CIFAR, f"data.root={cifar10_dir}", "stage=teacher",
                          f"data.batch_transforms={str(batch_transforms).lower()}",
                          f"paths.cache_dir={tmp_path / str(batch_transforms)}")
        record = run_stage(cfg, run_dir=tmp_path / str(batch_transforms))
        metrics[batch_transforms] = record["metrics"]
    assert metrics[True] == metrics[False]


def test_a_run_with_batch_augmentation_resumes_exactly(compose_cfg, tmp_path, monkeypatch,
                                                       cifar10_dir):
    from test_resume import _interrupted_then_resumed

    # dropout: the global RNG matters too; step 3 of 2 x 2 batches: inside epoch 1
    reference, stopped, checkpoint, resumed = _interrupted_then_resumed(
        compose_cfg, tmp_path, monkeypatch, 3, f"data.root={cifar10_dir}", "data.batch_size=128",
        "model.drop_rate=0.3", base=CIFAR)
    assert stopped["status"] == "interrupted" and checkpoint["global_step"] == 3
    assert resumed["metrics"] == reference["metrics"]
