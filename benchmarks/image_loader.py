"""Loading speed and memory of `data=image_folder` against torchvision's ImageFolder.

    python -m benchmarks.image_loader --scale full     (whole suite: python -m benchmarks)

A generated folder of 224 x 224 JPEGs (CIFAR-10 images upscaled, so they compress like
photos, 10 class folders). Throughput: one training epoch (random resized crop 224 + flip +
normalise, batch 64) through `data=image_folder`'s loader and through a plain torchvision
`ImageFolder` + `DataLoader` loop with the same transforms and the same number of workers,
in turns in one process; samples/s of each. Memory: peak resident memory of a child process
(and of its loader workers) that runs one epoch over the folder at two sizes; the larger
holds each file 4 times (hard links), so only the count of images differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, Options, Section, Target, interleaved, main_for, median

SCALES = {"full": dict(images=3000, workers=2, repeats=3),
          "smoke": dict(images=200, workers=2, repeats=1)}
BATCH = 64


def make_folder(options: Options, images: int) -> Path:
    """``images`` JPEGs (quality 90) in 10 class folders, made once per size."""
    from PIL import Image

    root = options.work_dir / "image_loader" / f"jpeg-{images}"
    done = root / ".complete"
    if done.exists():
        return root
    with np.load(options.data_dir / "cifar10" / "test.npz") as arrays:
        x, y = arrays["x"][:images], arrays["y"][:images]
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((224, 224), Image.BICUBIC).save(
            folder / f"{index:06d}.jpg", quality=90)
    done.touch()
    return root


def replicate(root: Path, copies: int) -> Path:
    """The folder with every file hard-linked ``copies`` times (no new bytes on disk)."""
    out = root.with_name(f"{root.name}-x{copies}")
    if (out / ".complete").exists():
        return out
    for file in sorted((root / "train").rglob("*.jpg")):
        target = out / "train" / file.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for copy in range(copies):
            link = target / f"{copy}-{file.name}"
            if not link.exists():
                os.link(file, link)
    (out / ".complete").touch()
    return out


def lepton_loader(root: Path, workers: int):
    from omegaconf import OmegaConf

    from lepton_exp.data import build_datamodule
    from lepton_exp.data.sets import image_folder

    cfg = OmegaConf.structured(image_folder.Schema(
        name="image_folder", root=str(root), batch_size=BATCH, num_workers=workers,
        val_size=10, test_size=10))  # small held-out splits: nearly all images train
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return datamodule.train_dataloader()


def plain_loader(root: Path, workers: int):
    """What a researcher writes by hand: torchvision's ImageFolder + the usual transforms."""
    import torch
    from torchvision import datasets, transforms

    from lepton_exp.data.sets.image_folder import MEAN, STD

    transform = transforms.Compose([transforms.RandomResizedCrop(224),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize(MEAN, STD)])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       num_workers=workers, drop_last=True)


def samples_per_second(loader) -> float:
    started, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch[1])
    return samples / (time.perf_counter() - started)


def peak_memory(root: Path, workers: int) -> dict:
    """Peak RSS (MiB) of a fresh process running one `data=image_folder` epoch over root."""
    code = ("import json, resource, sys; from pathlib import Path; "
            "from benchmarks.image_loader import lepton_loader, samples_per_second; "
            f"rate = samples_per_second(lepton_loader(Path({str(root)!r}), {workers})); "
            "usage = lambda who: resource.getrusage(who).ru_maxrss / 1024; "
            "print(json.dumps({'main': usage(resource.RUSAGE_SELF), "
            "'worker': usage(resource.RUSAGE_CHILDREN), 'rate': rate}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(options: Options) -> Section:
    s = SCALES[options.scale]
    import torch

    torch.manual_seed(0)
    root = make_folder(options, s["images"])
    workers = s["workers"]
    rates = interleaved({
        "image_folder": lambda: samples_per_second(lepton_loader(root, workers)),
        "torchvision": lambda: samples_per_second(plain_loader(root, workers))}, s["repeats"])
    ours, plain = median(rates["image_folder"]), median(rates["torchvision"])
    ratio = ours / plain
    small, large = peak_memory(root, workers), peak_memory(replicate(root, 4), workers)
    growth = large["main"] - small["main"]
    body = (
        f"Setup: {s['images']} JPEGs of 224 x 224 in 10 class folders, batch {BATCH}, "
        f"{workers} loader workers, training transforms (random resized crop 224, flip, "
        f"normalise); samples/s of one epoch, median of {s['repeats']} turns each.\n\n"
        "| loader | samples/s (median) | all turns |\n| --- | ---: | --- |\n"
        f"| `data=image_folder` (lepton-exp) | {ours:.0f} | "
        f"{', '.join(f'{r:.0f}' for r in rates['image_folder'])} |\n"
        f"| torchvision `ImageFolder` + `DataLoader` | {plain:.0f} | "
        f"{', '.join(f'{r:.0f}' for r in rates['torchvision'])} |\n\n"
        f"**Ratio: {ratio:.2f}x.**\n\n"
        "Peak resident memory of a process running one `data=image_folder` epoch:\n\n"
        "| images | main process (MiB) | largest worker (MiB) | samples/s |\n"
        "| ---: | ---: | ---: | ---: |\n"
        f"| {s['images']} | {small['main']:.0f} | {small['worker']:.0f} | {small['rate']:.0f} |\n"
        f"| {4 * s['images']} | {large['main']:.0f} | {large['worker']:.0f} | "
        f"{large['rate']:.0f} |\n\n"
        f"Memory growth for 4x the images: {growth:+.0f} MiB (main process).\n\n"
        f"Command: `python -m benchmarks.image_loader --scale {options.scale}`")
    return Section("image_loader", "Image-folder loader", body, [
        Target("image_folder loader: samples/s vs torchvision ImageFolder", f"{ratio:.2f}x",
               ">= 0.95x", ratio >= 0.95),
        Target("image_folder loader: peak memory growth, 4x the images", f"{growth:+.0f} MiB",
               "flat (< 50 MiB)", growth < 50)])


if __name__ == "__main__":
    main_for(run)
