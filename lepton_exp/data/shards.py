"""Shards: data sets larger than a node's disk or memory, streamed with LitData.

    python -m lepton_exp.data.shards write --from image_folder --root <folder> --out <dir>

writes ``<dir>/train``, ``<dir>/val`` and ``<dir>/test``: LitData chunks (``litdata.optimize``)
with LitData's ``index.json``, and beside it ours, ``lepton_shards.json``: class names, sample
count, where the samples came from. ``data=shards data.root=<dir>`` (or an ``s3://`` /
``gs://`` copy of it) trains from them (lepton_exp.data.streaming).

The splits are those ``data=image_folder`` makes of the same folder with the same
``--val-size``/``--test-size``/``--split-seed`` (a stream cannot be split afterwards), and
every sample keeps its index in that split. Images are stored as their files' original bytes
(decoded in the loader workers, never re-encoded); each split is written in a seeded random
order, because LitData shuffles chunks and the items inside a chunk, not across chunks: a
class-sorted folder would otherwise give one-class batches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from lepton_exp.digest import short_hash
from lepton_exp.errors import ConfigError, LeptonError, one_line

META_NAME = "lepton_shards.json"  # ours, beside LitData's index.json
INDEX_NAME = "index.json"
FORMAT = 1  # bump when what an item holds changes
SPLITS = ("train", "val", "test")
WRITE_COMMAND = "python -m lepton_exp.data.shards write"
# What LitData streams from besides local directories (``local:`` is its local stand-in).
URL_PREFIXES = ("s3://", "gs://", "r2://", "azure://", "hf://", "local:")


# ------------------------------------------------------------------------------ the format
def is_url(location: str) -> bool:
    return str(location).startswith(URL_PREFIXES)


def split_location(root: str, split: str) -> str:
    """Where split ``split`` of the shards at ``root`` (a directory or a URL) lives."""
    if is_url(root):
        return f"{root.rstrip('/')}/{split}"
    return str(Path(root).expanduser() / split)


SOURCES = {"image": "image_folder --root <image folder>", "text": "text_table --file <table>"}


def read_meta(location: str, key: str = "data.root", kind: str = "image") -> dict[str, Any]:
    """Our JSON of the shard directory at ``location`` (checked), or a ConfigError that says
    what is missing and how to write shards (of ``kind``: image or text)."""
    write = f"write them with `{WRITE_COMMAND} --from {SOURCES[kind]} --out <dir>`"
    if is_url(location):
        text = _fetch(location, write)
    else:
        folder = Path(location)
        if not (folder / INDEX_NAME).is_file():
            raise ConfigError(f"{key}: '{folder}' holds no shards (no {INDEX_NAME}): {write}")
        if not (folder / META_NAME).is_file():
            raise ConfigError(f"{key}: '{folder}' has LitData shards but no {META_NAME} (class "
                              f"names, sample count): {write}")
        text = (folder / META_NAME).read_text(encoding="utf-8")
    try:
        meta = json.loads(text)
        assert isinstance(meta, dict) and isinstance(meta["samples"], int)
        assert all(isinstance(name, str) for name in meta["class_names"])
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ConfigError(f"{key}: {location}/{META_NAME} is damaged ({one_line(error)[:80]}): "
                          f"{write}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{key}: {location} holds shards of format {meta.get('format')}, "
                          f"this version reads format {FORMAT}: {write}")
    return meta


def _fetch(url: str, write: str) -> str:
    """Our JSON of a shard directory in object storage (LitData's downloaders and
    credentials: the same access the training itself needs)."""
    import tempfile

    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory(prefix="lepton-shards-") as local:
        for name in (INDEX_NAME, META_NAME):
            try:
                get_downloader(url, local, []).download_file(f"{url}/{name}",
                                                             os.path.join(local, name))
            except Exception as error:  # noqa: BLE001 - missing, no access, no network
                raise ConfigError(f"data.root: cannot read {url}/{name} "
                                  f"({one_line(error)[:120]}): check the URL and your "
                                  f"credentials, or {write}") from error
        return Path(local, META_NAME).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ writing
def image_item(entry: tuple[int, str, int, str]) -> dict[str, Any]:
    """One stored image sample: its index in its split, the file's bytes, label and path
    (relative to the source folder)."""
    index, path, label, relative = entry
    return {"index": index, "image": Path(path).read_bytes(), "label": label, "path": relative}


def text_item(entry: tuple) -> dict[str, Any]:
    """One stored text sample: its index, sentence (and the pair's second), label."""
    index, text, label, *pair = entry
    item = {"index": index, "text": text, "label": label}
    if pair:
        item["text_pair"] = pair[0]
    return item


def write_image_folder(root: str, out: str, *, splits: Sequence[str] = SPLITS,
                       val_size: float = 0.1, test_size: float = 0.1, split_seed: int = 0,
                       chunk_bytes: str = "64MB", workers: int = 1,
                       verbose: bool = True) -> dict[str, dict]:
    """Shards of the class folders at ``root`` (the splits ``data=image_folder`` makes with
    these sizes) under ``out``; returns each written split's JSON."""
    from omegaconf import OmegaConf

    from lepton_exp.data.sets import image_folder

    cfg = OmegaConf.structured(image_folder.Schema(
        name="image_folder", root=root, val_size=val_size, test_size=test_size,
        split_seed=split_seed, num_workers=0))
    datamodule = image_folder.build(cfg)
    datamodule.setup()
    base = str(Path(root).expanduser().resolve())
    source = {"from": "image_folder", "root": base, "manifests": image_folder.data_identity(cfg),
              "val_size": val_size, "test_size": test_size, "split_seed": split_seed}
    written = {}
    for name in splits:
        split = getattr(datamodule, name)
        images, labels = split.images, split.labels.tolist()
        files = [os.path.join(images.root, str(path)) for path in images.paths]
        entries = [(i, file, labels[i], os.path.relpath(file, base))
                   for i, file in enumerate(files)]
        written[name] = _write_split(
            image_item, entries, Path(out) / name, "image", datamodule.class_names, source,
            seed=split_seed, chunk_bytes=chunk_bytes, workers=workers, verbose=verbose)
    return written


def _write_split(item, entries: list, out: Path, kind: str, class_names: Sequence[str],
                 source: dict, *, seed: int, chunk_bytes: str, workers: int,
                 verbose: bool, extra: Optional[dict] = None) -> dict:
    """``entries`` through ``item`` into LitData chunks at ``out`` in a seeded random order,
    then our JSON (written last: a directory with it is complete)."""
    import numpy as np
    from litdata import optimize

    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: '{out}' is not empty: write to a new directory (or delete "
                          "that one)")
    order = np.random.default_rng(seed).permutation(len(entries))
    try:
        optimize(fn=item, inputs=[entries[i] for i in order], output_dir=str(out),
                 chunk_bytes=chunk_bytes, num_workers=workers, reorder_files=False,
                 keep_data_ordered=True, verbose=verbose,
                 start_method="fork" if sys.platform == "linux" else None)
    except (ValueError, TypeError) as error:  # e.g. a chunk size LitData cannot parse
        raise ConfigError(f"cannot write shards to {out}: {one_line(error)[:200]}") from error
    index = (out / INDEX_NAME).read_text(encoding="utf-8")
    stored = sum(chunk["chunk_size"] for chunk in json.loads(index)["chunks"])
    if stored != len(entries):
        raise LeptonError(f"{out} holds {stored} samples of {len(entries)}: write it again")
    meta = {"format": FORMAT, "kind": kind, "class_names": list(class_names),
            "samples": len(entries), "shards_digest": short_hash(index, 16),
            "source": source, **(extra or {})}
    (out / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


# ------------------------------------------------------------------------------ command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lepton_exp.data.shards",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the shards of an image folder or a table")
    write.add_argument("--from", dest="source", required=True,
                       choices=("image_folder", "text_table"))
    write.add_argument("--root", help="image_folder: train/ (+ val/, test/) of class folders, "
                                      "or the class folders")
    write.add_argument("--file", help="text_table: the table (csv, tsv, json, parquet)")
    write.add_argument("--text-column")
    write.add_argument("--text-pair-column")
    write.add_argument("--label-column")
    write.add_argument("--header", action=argparse.BooleanOptionalAction, default=True)
    write.add_argument("--out", required=True, help="a new local directory (upload it to "
                                                    "object storage afterwards if you like)")
    write.add_argument("--split", choices=SPLITS, help="write only this split")
    write.add_argument("--val-size", type=float, default=0.1)
    write.add_argument("--test-size", type=float, default=0.1)
    write.add_argument("--split-seed", type=int, default=0)
    write.add_argument("--chunk-bytes", default="64MB")
    write.add_argument("--workers", type=int, default=1, help="writer processes")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if is_url(args.out):
            raise ConfigError(f"--out={args.out}: write to a local directory, then copy it to "
                              "object storage (e.g. `aws s3 sync`)")
        options = dict(splits=[args.split] if args.split else SPLITS, val_size=args.val_size,
                       test_size=args.test_size, split_seed=args.split_seed,
                       chunk_bytes=args.chunk_bytes, workers=max(1, args.workers))
        if args.source == "image_folder":
            if not args.root:
                raise ConfigError("--from image_folder needs --root <folder of class folders>")
            written = write_image_folder(args.root, args.out, **options)
        else:
            written = _write_text_table(args, options)
    except LeptonError as error:
        print(f"lepton-exp shards: error: {error}", file=sys.stderr)
        return 2
    for name, meta in written.items():
        print(f"{Path(args.out) / name}: {meta['samples']} samples, "
              f"{len(meta['class_names'])} classes")
    return 0


def _write_text_table(args, options: dict) -> dict[str, dict]:
    if not (args.file and args.text_column and args.label_column):
        raise ConfigError("--from text_table needs --file <table> --text-column <name or "
                          "position> --label-column <name or position>")
    from lepton_exp.data.tables import Columns

    def column(value: Optional[str]):  # positions for files without a header row
        return int(value) if value is not None and value.isdigit() else value

    columns = Columns(text=column(args.text_column), label=column(args.label_column),
                      pair=column(args.text_pair_column), header=args.header)
    return write_text_table(args.file, args.out, columns, **options)


def write_text_table(file: str, out: str, columns, *, splits: Sequence[str] = SPLITS,
                     val_size: float = 0.1, test_size: float = 0.1, split_seed: int = 0,
                     chunk_bytes: str = "64MB", workers: int = 1,
                     verbose: bool = True) -> dict[str, dict]:
    """Shards of the table ``file`` (read as data=text_table reads it: ``columns``, a
    lepton_exp.data.tables.Columns) under ``out``, split as data=text_table splits a table
    without val/test files; returns each written split's JSON."""
    import tempfile
    from dataclasses import asdict

    from lepton_exp.data.tables import read_files

    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(f"--file={file}: {path.absolute()} is not a file: give the table "
                          "(.csv, .tsv, .txt, .jsonl, .parquet)")
    with tempfile.TemporaryDirectory(prefix="lepton-shards-") as cache:
        table = read_files({"train": path}, columns, cache_dir=cache, keys=False,
                           hint="check --text-column, --label-column and --header")
    texts, pairs, labels = table.splits["train"]
    stat = path.stat()
    source = {"from": "text_table", "file": str(path.resolve()), "columns": asdict(columns),
              "digest": short_hash([str(path.resolve()), stat.st_size, stat.st_mtime_ns], 16),
              "val_size": val_size, "test_size": test_size, "split_seed": split_seed}
    rows = _carve(labels, val_size, test_size, split_seed)
    written = {}
    for name in splits:
        entries = [(i, texts[row], labels[row], *([pairs[row]] if pairs else []))
                   for i, row in enumerate(rows[name].tolist())]
        written[name] = _write_split(
            text_item, entries, Path(out) / name, "text", table.class_names, source,
            seed=split_seed, chunk_bytes=chunk_bytes, workers=workers, verbose=verbose,
            extra={"pairs": pairs is not None})
    return written


def _carve(labels: list, val_size: float, test_size: float, seed: int) -> dict:
    """Row indices of train/val/test as ClassificationData.setup carves a table without
    val/test files: the test split first, then validation, both stratified."""
    import numpy as np

    from lepton_exp.data.base import stratified_split

    labels = np.asarray(labels)
    keep, test = stratified_split(labels, test_size, seed, "--test-size")
    train, val = stratified_split(labels[keep], val_size, seed, "--val-size")
    return {"train": keep[train], "val": keep[val], "test": test}


if __name__ == "__main__":
    sys.exit(main())
