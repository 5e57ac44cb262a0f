"""data=shards: LitData shards written from an image folder, streamed over DDP ranks and
loader workers, trained on, resumed; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from litdata.utilities.env import _DistributedEnv
from omegaconf import OmegaConf

from lepton_exp.app.runner import run_stage
from lepton_exp.data import build_datamodule
from lepton_exp.data.folder import decode
from lepton_exp.data.sets import image_folder, shards
from lepton_exp.data.shards import META_NAME
from lepton_exp.data.shards import main as write_shards
from lepton_exp.errors import ConfigError, Stopped
from tests.image_files import random_images, write_image_folder

NAMES = ("cat", "dog", "emu")
SPLIT_SIZES = {"val_size": 12, "test_size": 0.1, "split_seed": 0}
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """train/ (48 images: 36 train + 12 carved for val) + test/ (15), 3 classes, 40 x 48 PNGs."""
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root / "train", *random_images(48, 3, seed=1), NAMES)
    write_image_folder(root / "test", *random_images(15, 3, seed=2), NAMES)
    return root


@pytest.fixture(scope="module")
def shard_root(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    assert write_shards(["write", "--from", "image_folder", "--root", str(folder), "--out",
                         str(out), "--val-size", "12", "--chunk-bytes", "6KB"]) == 0
    return out


def _shards_dm(root, **values):
    return build_datamodule(OmegaConf.structured(shards.Schema(name="shards", root=str(root),
                                                               **values)))


def _folder_dm(root):
    dm = build_datamodule(OmegaConf.structured(image_folder.Schema(
        name="image_folder", root=str(root), **SPLIT_SIZES)))
    dm.setup()
    return dm


# -- writing and reading back ------------------------------------------------------------------
def test_shards_hold_image_folders_splits_as_the_files_bytes(folder, shard_root):
    from lepton_exp.data.streaming import ShardDataset, ShardSplit

    source = _folder_dm(folder)
    for name in ("train", "val", "test"):
        meta = json.loads((shard_root / name / META_NAME).read_text())
        split = getattr(source, name)
        assert meta["class_names"] == list(NAMES) and meta["samples"] == len(split)
        assert meta["source"]["manifests"] == image_folder.data_identity(source.cfg)
        stored = ShardDataset(ShardSplit(str(shard_root / name), meta),
                              lambda item, epoch: item, train=False, seed=0,
                              env=_DistributedEnv(1, 0, 1))
        items = [stored[i] for i in range(len(split))]
        # written in a seeded random order, each sample keeping its index in the split
        assert sorted(item["index"] for item in items) == list(range(len(split)))
        assert [item["index"] for item in items] != list(range(len(split)))
        for item in items:
            path = Path(split.images.root) / str(split.images.paths[item["index"]])
            assert folder / item["path"] == path
            assert item["image"] == path.read_bytes()  # the file as it is, not re-encoded
            assert item["label"] == int(split.labels[item["index"]])
    dm = _shards_dm(shard_root, image_size=32, num_workers=0)
    dm.setup()
    assert (len(dm.train), len(dm.val), len(dm.test)) == (36, 12, 15)
    assert dm.info.class_names == NAMES and dm.info.num_classes == 3
    first = dm.first_samples(1)[0][0]
    assert first.shape == (3, 32, 32)
    # the decoded pixels are the file's: the evaluation transform of the source image
    index = ShardDataset(dm.train, lambda item, epoch: item["index"], train=False, seed=0,
                         env=_DistributedEnv(1, 0, 1))[0]
    expected = dm.eval_transform()(decode(str(
        Path(source.train.images.root) / str(source.train.images.paths[index]))))
    assert torch.equal(first, expected)


def _indices(loader) -> list[list[int]]:
    """The sample indices of a loader's batches (an epoch)."""
    return [batch[-1].tolist() for batch in loader]


def test_two_ranks_with_two_workers_read_evaluation_once_and_training_without_repeats(
        shard_root, monkeypatch):
    dm = _shards_dm(shard_root, image_size=16, num_workers=2, batch_size=4)
    dm.setup()
    dm.train_with_index = True
    original = dm.items

    def indexed(split, train):  # evaluation samples with their index too, to count them
        items = original(split, train)
        items.with_index = True
        return items

    monkeypatch.setattr(dm, "items", indexed)
    torch.manual_seed(3)

    def loaders(split, train: bool) -> list:  # ranks 0 and 1 of 2, 2 loader workers each
        return [dm.loader(split, train, env=_DistributedEnv(2, rank, 1)) for rank in (0, 1)]

    for split in (dm.val, dm.test):  # 12 and 15 samples: every one exactly once
        ranks = [[i for batch in _indices(loader) for i in batch] for loader in
                 loaders(split, False)]
        assert sorted(ranks[0] + ranks[1]) == list(range(len(split)))
        # each rank about half (the last one also the < 2 left over), not whole batches
        assert [len(seen) for seen in ranks] == [len(split) // 2, (len(split) + 1) // 2]
        assert [len(loader) for loader in loaders(split, False)] == [
            len(_indices(loader)) for loader in loaders(split, False)]
    train_loaders, epochs = loaders(dm.train, True), []
    for _ in range(2):
        ranks = [_indices(loader) for loader in train_loaders]
        assert len(ranks[0]) == len(ranks[1]) == 4  # equal steps per rank, as DDP needs
        assert all(len(batch) == 4 for batches in ranks for batch in batches)
        seen = [i for batches in ranks for batch in batches for i in batch]
        assert len(set(seen)) == len(seen) == 32  # 36 samples: < 2 ranks x batch 4 left out
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # a new order every epoch


def test_training_order_changes_every_epoch_and_augmentation_is_seeded_per_sample(shard_root):
    dm = _shards_dm(shard_root, image_size=16, num_workers=0, batch_size=6)
    dm.setup()
    dm.train_with_index = True
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    first, second = ([(batch[0], batch[2]) for batch in loader] for _ in range(2))
    order = [torch.cat([index for _, index in epoch]).tolist() for epoch in (first, second)]
    assert sorted(order[0]) == sorted(order[1]) == list(range(36)) and order[0] != order[1]
    crops = {epoch: {int(i): image for images, index in batches
                     for image, i in zip(images, index)}
             for epoch, batches in enumerate((first, second))}
    again = {int(i): image for batch in dm.train_dataloader() for image, i in
             zip(batch[0], batch[2])}
    assert all(torch.equal(again[i], crops[0][i]) for i in range(36))  # seeded: reproducible
    assert sum(torch.equal(crops[0][i], crops[1][i]) for i in range(36)) < 6  # epochs differ


def test_subsets_are_the_first_stored_samples_whatever_the_seed(shard_root):
    dm = _shards_dm(shard_root, image_size=16, num_workers=0, batch_size=4, train_subset=20,
                    val_subset=5)
    dm.setup()
    dm.train_with_index = True
    assert (len(dm.train), len(dm.val), len(dm.test)) == (20, 5, 15)
    assert dm.no_output_cache_reason  # stored indices run past a subset's length
    chosen = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        chosen.append({i for batch in dm.train_dataloader() for i in batch[2].tolist()})
    assert len(chosen[0]) == 20 and chosen[0] == chosen[1]
    assert sum(len(batch[1]) for batch in dm.val_dataloader()) == 5


# -- runs -----------------------------------------------------------------------------------------
def test_a_run_on_shards_equals_the_image_folder_run(folder, shard_root, compose_cfg, tmp_path):
    """The whole training split in one batch (BatchNorm sees the same batch whatever the
    order): the same samples with the same seeded crops give the same training metrics."""
    common = [*FAST, "stage=teacher", "model=resnet8", "data.image_size=32",
              "data.num_workers=0", f"paths.cache_dir={tmp_path / 'cache'}"]
    record = run_stage(compose_cfg(*common, "data=shards", f"data.root={shard_root}"),
                       run_dir=tmp_path / "shards")
    reference = run_stage(compose_cfg(*common, "data=image_folder", f"data.root={folder}",
                                      "data.val_size=12"), run_dir=tmp_path / "folder")
    assert record["status"] == "completed"
    assert record["data"]["train"] == 36 and list(record["data"]["class_names"]) == list(NAMES)
    for key, value in reference["metrics"].items():
        if "time" not in key:
            assert record["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_shards_at_a_url_are_fetched_into_the_cache(shard_root, tmp_path):
    # LitData's `local:` URLs take the object-storage path: index and our JSON downloaded,
    # chunks copied into data.cache_dir
    dm = _shards_dm(f"local:{shard_root}", image_size=16, num_workers=0,
                    cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert len(dm.test) == 15
    assert sum(len(batch[1]) for batch in dm.test_dataloader()) == 15
    assert list((tmp_path / "cache").rglob("*.bin"))


# -- text -----------------------------------------------------------------------------------------
def test_text_shards_hold_text_tables_splits_and_train(compose_cfg, tmp_path):
    """A headerless news table: the shards' splits and token ids are data=text_table's."""
    from lepton_exp.data.streaming import ShardDataset
    from tests.test_text_table import write_news

    table = write_news(tmp_path / "news.tsv", 48)
    assert write_shards(["write", "--from", "text_table", "--file", str(table), "--no-header",
                         "--text-column", "0", "--label-column", "1", "--val-size", "8",
                         "--test-size", "8", "--out", str(tmp_path / "shards")]) == 0
    common = ["paths.cache_dir=" + str(tmp_path / "cache"), "data.max_length=32",
              "stage=teacher", "model=bert_tiny", "data.batch_size=16", "data.num_workers=0",
              *FAST]
    reference = build_datamodule(compose_cfg(
        *common, "data=text_table", f"data.train_file={table}", "data.header=false",
        "data.text_column=0", "data.label_column=1", "data.val_size=8",
        "data.test_size=8").data)
    reference.setup()
    cfg = compose_cfg(*common, "data=text_shards", f"data.root={tmp_path / 'shards'}")
    dm = build_datamodule(cfg.data)
    dm.setup()
    assert dm.info == reference.info  # classes (names in sorted order), vocabulary, length
    for name in ("train", "val", "test"):
        expected = getattr(reference, name)
        items = dm.items(getattr(dm, name), train=True)
        items.with_index = True
        stored = ShardDataset(getattr(dm, name), items, train=False, seed=0,
                              env=_DistributedEnv(1, 0, 1))
        samples = [stored[i] for i in range(len(expected))]
        assert sorted(index for *_, index in samples) == list(range(len(expected)))
        for ids, label, index in samples:
            assert torch.equal(ids, expected.input_ids[index])
            assert label == expected.labels[index]
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed" and record["data"]["train"] == 32
    with pytest.raises(ConfigError, match="holds text shards: read them with data=text_shards"):
        _shards_dm(tmp_path / "shards")


# -- bad input ------------------------------------------------------------------------------------
def test_a_root_without_shards_names_the_path_and_the_writer(tmp_path, shard_root):
    with pytest.raises(ConfigError) as caught:
        _shards_dm(tmp_path)
    message = str(caught.value)
    assert f"'{tmp_path / 'train'}' holds no shards" in message
    assert "python -m lepton_exp.data.shards write --from image_folder" in message
    assert "\n" not in message
    import shutil

    shutil.copytree(shard_root, tmp_path / "copy")
    (tmp_path / "copy" / "val" / META_NAME).unlink()
    with pytest.raises(ConfigError, match=f"'{tmp_path / 'copy' / 'val'}' has LitData shards "
                                          f"but no {META_NAME}"):
        _shards_dm(tmp_path / "copy")
    (tmp_path / "copy" / "test" / META_NAME).write_text("{not json")
    (tmp_path / "copy" / "val" / META_NAME).write_text(
        (shard_root / "val" / META_NAME).read_text())
    with pytest.raises(ConfigError, match=f"{META_NAME} is damaged"):
        _shards_dm(tmp_path / "copy")


def test_an_undecodable_image_names_its_source_file_or_is_skipped(tmp_path):
    write_image_folder(tmp_path / "tree", *random_images(12, 2), ("a", "b"))
    (tmp_path / "tree" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    from lepton_exp.data.shards import write_image_folder as write

    write(str(tmp_path / "tree"), str(tmp_path / "shards"), val_size=2, test_size=2,
          verbose=False)
    with pytest.raises(ConfigError) as caught:
        dm = _shards_dm(tmp_path / "shards", image_size=16, num_workers=0)
        dm.setup()
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            list(loader)
    message = str(caught.value)
    assert f"cannot decode image '{tmp_path / 'tree' / 'a' / 'broken.png'}' (sample " in message
    assert "data.skip_bad_files=true" in message and "\n" not in message
    dm = _shards_dm(tmp_path / "shards", image_size=16, num_workers=0, skip_bad_files=True)
    dm.setup()
    seen = sum(len(batch[1]) for loader in (dm.train_dataloader(), dm.val_dataloader(),
                                             dm.test_dataloader()) for batch in loader)
    assert seen == 12 and len(dm.skipped_files()) == 1


def test_the_writer_refuses_bad_arguments_in_one_line(folder, shard_root, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lepton_exp.data.shards", "write", "--from",
                           "image_folder", "--out", str(tmp_path / "x")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("lepton-exp shards: error: --from image_folder needs "
                                   "--root <folder of class folders>")
    with pytest.raises(ConfigError, match="is not empty"):
        from lepton_exp.data.shards import write_image_folder

        write_image_folder(str(folder), str(shard_root), splits=["val"], val_size=12)


# -- resume and DDP ------------------------------------------------------------------------
@pytest.mark.parametrize("step", [6, pytest.param(4, marks=pytest.mark.slow)])
# (4 steps an epoch: mid-epoch 2, then epoch 2's end)
def test_a_run_on_shards_stopped_and_resumed_ends_as_the_uninterrupted_one(
        shard_root, compose_cfg, tmp_path, monkeypatch, step):
    from lepton_exp.training.resume import batches_done_in_epoch
    from tests.test_resume import _stop_at

    cfg = compose_cfg(*FAST, "trainer.max_epochs=3", "stage=teacher", "model=resnet8",
                      "model.drop_rate=0.3", "data=shards", f"data.root={shard_root}",
                      "data.image_size=16", "data.batch_size=8", "data.num_workers=2",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    reference = run_stage(cfg.copy(), run_dir=tmp_path / "reference")
    _stop_at(monkeypatch, step)
    with pytest.raises(Stopped):  # Ctrl-C: Lightning stops, the trainer raises Stopped
        run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt",
                            weights_only=True)
    assert batches_done_in_epoch(checkpoint) == step % 4
    resumed = run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    assert resumed["status"] == "completed" and resumed["resumed_from"]
    assert resumed["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_the_teacher_output_cache_works_on_shards(shard_root, compose_cfg, tmp_path):
    """Stored indices are stable: teacher outputs computed once per sample give the metrics
    of computing them every step."""
    common = [*FAST, "trainer.max_epochs=2", "distill=kd", "model=resnet8",
              "teacher.model.name=resnet8", "data=shards", f"data.root={shard_root}",
              "data.image_size=16", "data.augment=false", "data.batch_size=8",
              "data.num_workers=2", f"paths.cache_dir={tmp_path / 'cache'}"]
    cached = run_stage(compose_cfg(*common), run_dir=tmp_path / "cached")
    computed = run_stage(compose_cfg(*common, "distill.cache_teacher_outputs=false"),
                         run_dir=tmp_path / "computed")
    stats = cached["teacher_output_cache"]
    # every sample through the teacher once, in 2 epochs (each leaves out 4 others)
    assert stats["enabled"] and 32 < stats["teacher_forwards"] == stats["samples_stored"] <= 36
    for key, value in computed["metrics"].items():
        assert cached["metrics"][key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.slow
def test_two_ddp_ranks_train_on_shards(shard_root, tmp_path):
    from tests.test_cli import cli

    done = cli("stage=teacher", "model=resnet8", "data=shards", f"data.root={shard_root}",
               "data.image_size=16", "data.batch_size=8", "data.num_workers=1", "trainer=ddp",
               "trainer.devices=2", "trainer.accelerator=cpu", *FAST,
               "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path,
               env={"LEPTON_OUTPUT_DIR": str(tmp_path / "out")})
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["status"] == "completed" and record["data"]["train"] == 36
    # 36 samples, 2 ranks x batch 8: 2 steps (32 samples), the same on both ranks
    assert record["metrics"]["global_step"] == 2


def test_the_node_count_litdata_is_given_comes_from_torchrun_or_slurm(monkeypatch):
    from lepton_exp.data.streaming import nodes

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NNODES", raising=False)
    assert nodes(8) == 1
    monkeypatch.setenv("SLURM_NNODES", "2")
    assert nodes(8) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's, when both are set
    assert nodes(8) == 4
