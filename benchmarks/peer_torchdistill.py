"""A peer side by side: torchdistill's KD and lepton-exp's on the same data, models and
schedule, one seed each; test accuracy and training throughput in one table.

    python -m benchmarks.peer_torchdistill --scale full     (whole suite: python -m benchmarks)

torchdistill is installed from PyPI into a throwaway venv (`<work dir>/peer/venv`, made anew
every run, without a pip of its own: this venv's pip installs into it with `--python`) whose
`.pth` file appends this venv's site-packages after its own: torch, torchvision, timm, numpy,
safetensors and lepton_exp are the very same builds, so pip adds only what torchdistill needs
beyond them, and this venv never sees torchdistill.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from benchmarks import cifar_setup
from benchmarks.common import (
    Options,
    Section,
    command_text,
    main_for,
    markdown_table,
    records,
    run_cli,
)

KEY, TITLE = "peer", "A peer side by side: torchdistill"
PACKAGE = "torchdistill==1.1.5"  # pinned: the driver uses its DistillationBox API
DRIVER = Path(__file__).resolve().parent / "peer" / "torchdistill_kd.py"
SHARED = ("torch", "torchvision", "timm", "numpy", "safetensors", "lepton-exp")


def lepton_overrides(options: Options, weights: str) -> list[str]:
    """KD with the teacher's forward every step (no output cache), as torchdistill does."""
    return [*cifar_setup.student_overrides(options, Path(weights)), "distill=kd", "seed=0",
            "distill.cache_teacher_outputs=false", "logger=csv",
            f"hydra.run.dir={options.work_dir / 'peer' / 'lepton_kd'}"]


def export_data(cfg, path: Path) -> dict:
    """The student's splits as lepton-exp's datamodule builds them (uint8, normalised per
    sample by the driver), with a few normalised training images to check against."""
    import torch

    from lepton_exp.data import build_datamodule

    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    assert datamodule.deterministic_train_transform, "students train without augmentation"
    train = datamodule.dataset(datamodule.train, train=True)
    torch.save({"train_x": datamodule.train.images, "train_y": datamodule.train.labels,
                "test_x": datamodule.test.images, "test_y": datamodule.test.labels,
                "check": torch.stack([train[i][0] for i in range(8)])}, path)
    return {"mean": list(cfg.data.mean or datamodule.mean),
            "std": list(cfg.data.std or datamodule.std),
            "train": len(datamodule.train), "test": len(datamodule.test)}


def purelib(python: Path | str) -> Path:
    return Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())


def throwaway_venv(options: Options) -> tuple[Path, str]:
    """A fresh venv with torchdistill, sharing this venv's packages; (its python, what pip
    did). Raises with the end of pip's log if the install fails."""
    venv = options.work_dir / "peer" / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    # no pip of its own (ensurepip's old setuptools would shadow ours): this venv's pip
    # installs into it with --python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    ours, theirs = Path(sysconfig.get_paths()["purelib"]), purelib(python)
    # processed after the venv's own site-packages: our packages come after its own
    (theirs / "zz_lepton_exp_shared.pth").write_text(
        f"import site; site.addsitedir({str(ours)!r})\n")
    log = options.work_dir / "logs" / "peer_pip.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                 "--disable-pip-version-check", PACKAGE],
                                stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text()
    if result.returncode:
        raise RuntimeError(f"pip install {PACKAGE} failed (exit {result.returncode}); log {log}:\n"
                           + "\n".join(text.splitlines()[-15:]))
    names, mine = ({d.metadata["Name"].lower() for d in importlib.metadata.distributions(
        path=[str(path)])} for path in (theirs, ours))
    if names & set(SHARED) or "torchdistill" in mine or importlib.util.find_spec("torchdistill"):
        raise RuntimeError(f"the venvs are not separated as intended: throwaway venv holds "
                           f"{sorted(names & set(SHARED))}, torchdistill in ours: "
                           f"{'torchdistill' in mine}; pip log {log}")
    installed = re.search(r"Successfully installed (.*)", text)
    satisfied = sorted({m.group(1).lower() for m in re.finditer(
        r"Requirement already satisfied: ([\w.-]+).* in " + re.escape(str(ours)), text)})
    pip = (f"pip installed only {installed.group(1) if installed else 'nothing'} into it and "
           f"found its {len(satisfied)} other requirements ("
           + ", ".join(name for name in ("torch", "torchvision", "numpy", "scipy", "pyyaml")
                       if name in satisfied) + ", ...) already satisfied through the `.pth`")
    return python, pip


def run(options: Options) -> Section:
    load = [os.getloadavg()[0]]  # how busy the machine was: the throughputs depend on it
    teacher = cifar_setup.teacher(options)
    s = cifar_setup.settings(options)
    peer_dir = options.work_dir / "peer"
    overrides = lepton_overrides(options, teacher["exported"])
    from lepton_exp.config.compose import compose_config

    cfg = compose_config([o for o in overrides if not o.startswith(("hydra.", "logger="))]
                  + [f"data.root={options.data_dir / 'cifar10'}"])
    assert cfg.scheduler.name == "cosine" and not cfg.scheduler.warmup_epochs
    threads = cfg.threads or os.cpu_count()  # each side's torch threads
    assert list(cfg.distill.terms) == ["kd"] and cfg.distill.terms.kd.weight is None
    # lepton-exp: a fresh run every time, so both sides are measured in the same session
    shutil.rmtree(peer_dir / "lepton_kd", ignore_errors=True)
    run_cli(overrides, options, "peer_lepton_kd")
    record = records(peer_dir / "lepton_kd")[0]
    # training epochs only (validation excluded), as the driver measures torchdistill's
    ours_speed = record["timing"]["train_samples_per_s"]

    python, pip = throwaway_venv(options)
    data = export_data(cfg, peer_dir / "data.pt")
    model = {"num_classes": record["data"]["num_classes"], "in_chans": record["data"]["in_chans"]}
    spec = {"data": str(peer_dir / "data.pt"), "mean": data["mean"], "std": data["std"],
            "teacher_weights": teacher["exported"], "seed": cfg.seed,
            "teacher": {"name": cfg.teacher.model.name, "kwargs": {
                **model, "drop_rate": cfg.teacher.model.drop_rate,
                **(cfg.teacher.model.kwargs or {})}},
            "student": {"name": cfg.model.name, "kwargs": {
                **model, "drop_rate": cfg.model.drop_rate, **(cfg.model.kwargs or {})}},
            "epochs": cfg.trainer.max_epochs, "batch_size": cfg.data.batch_size,
            "eval_batch_size": cfg.data.eval_batch_size or cfg.data.batch_size,
            "num_workers": cfg.data.num_workers,
            "sgd": {"lr": cfg.optim.lr, "momentum": cfg.optim.momentum,
                    "weight_decay": cfg.optim.weight_decay, "nesterov": cfg.optim.nesterov},
            "min_lr": cfg.scheduler.min_lr, "temperature": cfg.distill.temperature,
            "alpha": cfg.distill.alpha}
    (peer_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    log = options.work_dir / "logs" / "peer_torchdistill.log"
    with log.open("w") as err:
        result = subprocess.run([str(python), str(DRIVER), str(peer_dir / "spec.json")],
                                cwd=peer_dir, stdout=subprocess.PIPE, stderr=err, text=True)
    if result.returncode:
        raise RuntimeError(f"torchdistill driver failed (exit {result.returncode}); log {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-15:]))
    peer = json.loads(result.stdout.strip().splitlines()[-1])
    load.append(os.getloadavg()[0])
    shared = Path(sysconfig.get_paths()["purelib"])
    assert Path(peer["torch_file"]).is_relative_to(shared), "torch not taken from this venv"
    assert Path(peer["torchdistill_file"]).is_relative_to(peer_dir / "venv")
    assert abs(peer["last_lr"] - cfg.scheduler.min_lr) < 1e-9, "cosine did not end at min_lr"

    ours_acc, epochs = record["metrics"]["test/acc"], cfg.trainer.max_epochs
    rows = [["lepton-exp", record["versions"].get("lepton-exp", "-"), f"{ours_acc * 100:.2f}",
             f"{ours_speed:.0f}", "1.00"],
            ["torchdistill", peer["torchdistill"], f"{peer['test_acc'] * 100:.2f}",
             f"{peer['train_samples_per_s']:.0f}",
             f"{peer['train_samples_per_s'] / ours_speed:.2f}"]]
    gap = (peer["test_acc"] - ours_acc) * 100
    test_size = f"{data['test']:,}" + ("" if s["test_subset"] else " (all)")
    lr = f"lr {cfg.optim.lr}, momentum {cfg.optim.momentum}, weight decay " \
         f"{cfg.optim.weight_decay}, nesterov {str(cfg.optim.nesterov).lower()}"
    body = "\n".join([
        f"lepton-exp's KD and torchdistill {peer['torchdistill']}'s, one seed each, on the same "
        f"data, models and schedule (CIFAR-10, {cfg.model.name} from {cfg.teacher.model.name}):",
        "",
        f"- Data: the students' {data['train']:,}-image stratified training subset and "
        f"{test_size} test images, no augmentation. lepton-exp's datamodule builds the splits; "
        "torchdistill's run gets the same uint8 tensors (`peer/data.pt`), normalised per sample "
        "by the same torchvision transform (checked equal to the datamodule's).",
        f"- Models: lepton-exp's timm-registered CIFAR {cfg.model.name} and "
        f"{cfg.teacher.model.name} on both sides. The teacher is the shared one (its "
        f"`model.safetensors`, test accuracy {teacher['metrics']['test/acc'] * 100:.2f} %), "
        "frozen, in eval mode and run forward every step (lepton-exp's teacher-output cache "
        "off). Student init and shuffling: seed 0 on both sides, but lepton-exp draws from the "
        "RNG in another order, so initial weights and batch order differ.",
        f"- Schedule: {epochs} epoch{'s' * (epochs != 1)}, batch {cfg.data.batch_size} (last "
        f"partial batch dropped), SGD {lr}, cosine to {cfg.scheduler.min_lr} stepped every "
        "batch (lepton-exp's LambdaLR; torchdistill's `CosineAnnealingLR(T_max=all steps)` "
        "with `scheduling_step: 1`: the same formula), deterministic algorithms on, "
        f"{record.get('torch_threads', '-')}/{peer['torch_threads']} torch threads.",
        f"- Loss: T = {cfg.distill.temperature}, alpha = {cfg.distill.alpha}; both compute "
        "alpha · CE + (1 − alpha) · T² · KL(teacher‖student), batch-mean. torchdistill's "
        f"`KDLoss(alpha={cfg.distill.alpha})` weights the cross-entropy with alpha, as "
        "`conf/distill/kd.yaml` does (RepDistiller's alpha weights KD instead); on random "
        f"logits the two losses differ by {peer['loss_difference']:.1e}.",
        "- torchdistill runs through its own `DistillationBox` (a train config dict, as its "
        "yaml files hold: its KDLoss, optimizer, scheduler and forward/post-forward processes, "
        "the loop of its image-classification example), in a throwaway venv made anew every "
        f"run; {pip}. torch {peer['torch']} is thus the same build on both sides, so the "
        "throughputs compare the frameworks. lepton-exp also validates every epoch and logs "
        "through Lightning; torchdistill's run does not validate (neither is timed).",
        "- Test accuracy: last epoch. Train samples/s: samples of the training epochs / their "
        "time (data loading included; validation, test and start-up not). The 1-minute "
        f"load average at the section's start and end: {load[0]:.1f} / {load[1]:.1f} on "
        f"{os.cpu_count()} cores (it lags a minute, and counts this section's own runs, "
        f"{threads} threads each; the end's covers the section's last minute: "
        + ("more than they account for: other processes shared the cores, and the "
           "throughputs are noisy)" if load[1] > threads + 0.5
           else "nothing else loaded the machine)")
        + ("; at the smoke scale (a few steps) they mean little." if options.smoke
           else "."),
        "",
        markdown_table(["framework", "version", "test acc % (last epoch)", "train samples/s",
                        "ratio to lepton-exp"], rows),
        "",
        f"torchdistill − lepton-exp: {gap:+.2f} points (one seed each)"
        + ("." if abs(gap) <= 2 or options.smoke else
           ": more than 2 points apart; initial weights and batch order differ (above)."),
        "",
        "Commands (from the repo; the second runs inside the throwaway venv):",
        "",
        "```bash",
        command_text(overrides),
        f"{python} benchmarks/peer/torchdistill_kd.py {peer_dir / 'spec.json'}",
        f"python -m benchmarks.peer_torchdistill --scale {options.scale}   "
        "# this section (whole suite: python -m benchmarks)",
        "```"])
    return Section(KEY, TITLE, body, [])


if __name__ == "__main__":
    main_for(run)
