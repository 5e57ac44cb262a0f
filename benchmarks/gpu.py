"""The GPU throughput path, measured: KD resnet32x4 -> resnet8x4 on CIFAR-10 at batch 64 and
256, `lepton-exp` (trainer=gpu: batch transforms on the device, channels_last, fused SGD)
against a plain PyTorch loop doing the same KD step on the same device batches, in float32,
bf16 autocast, and bf16 + torch.compile. Skipped, saying so, without CUDA. DDP is timed only
where 2+ GPUs exist (two processes sharing one GPU measure nothing useful).

    python -m benchmarks.gpu --scale full     # one GPU: under 8 minutes
    python -m benchmarks.gpu --scale smoke    # checks the script; on CPU without CUDA

Per variant: one `lepton-exp distill=kd` command (its record's `timing.epoch_s`, the first
epoch left out) and the plain loop over the run's own loader, interleaved; samples/s.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, Options, Section, Target, main_for, markdown_table, median

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
VARIANTS = {"float32": dict(precision="32-true", compile=False),
            "bf16": dict(precision="bf16-mixed", compile=False),
            "bf16 + compile": dict(precision="bf16-mixed", compile=True)}
SCALES = {"full": dict(batches=(64, 256), subset=12800, epochs=3, device="gpu", eval=2000),
          "smoke": dict(batches=(16,), subset=160, epochs=2, device="cpu", eval=64)}


def _overrides(options: Options, batch: int, variant: str) -> list[str]:
    s = SCALES[options.scale]
    settings = VARIANTS[variant]
    return ["distill=kd", "data=cifar10", f"data.train_subset={s['subset']}",
            f"data.val_size={s['eval']}", f"data.test_subset={s['eval']}",
            f"data.batch_size={batch}", f"model={STUDENT}", f"teacher.model.name={TEACHER}",
            f"trainer={s['device']}", f"trainer.max_epochs={s['epochs']}", "teacher.max_epochs=1",
            # (the CPU smoke check runs float32 throughout: bf16 convolutions are emulated,
            # minutes, on CPUs without bf16 instructions)
            f"trainer.precision={settings['precision'] if s['device'] == 'gpu' else '32-true'}",
            f"trainer.compile={str(settings['compile']).lower()}",
            "distill.cache_teacher_outputs=false"]  # the teacher's forward every step, timed


def framework_run(options: Options, batch: int, variant: str) -> dict:
    out = options.work_dir / "gpu"
    env = {**os.environ, "LEPTON_DATA_DIR": str(options.data_dir),
           "LEPTON_OUTPUT_DIR": str(out), "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "lepton_exp", *_overrides(options, batch, variant),
               "resume=false", "trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    newest = max(glob.glob(str(out / "runs" / "*" / "*" / "summary.json")), key=os.path.getmtime)
    record = json.loads(Path(newest).read_text())
    timing = record["timing"]
    per_epoch = timing["train_samples"] / len(timing["epoch_s"])
    return {"samples_per_s": median(per_epoch / s for s in timing["epoch_s"][1:]),
            "test_acc": record["metrics"].get("test/acc"), "run_dir": record["run_dir"]}


def plain_run(options: Options, batch: int, variant: str, teacher_path: str) -> dict:
    """The KD step by hand on the framework's own device batches (same loader, on-device
    crop/flip/normalise), the same models and optimiser, autocast and compile as asked."""
    from lepton_exp.config.compose import compose_config
    from lepton_exp.data import build_datamodule
    from lepton_exp.data.batch_transforms import RawImages
    from safetensors.torch import load_file

    from lepton_exp.models import build_model
    from lepton_exp.training.optim import build_optimizer

    os.environ["LEPTON_DATA_DIR"] = str(options.data_dir)
    cfg = compose_config(_overrides(options, batch, variant))
    device = torch.device("cuda" if SCALES[options.scale]["device"] == "gpu" else "cpu")
    settings = VARIANTS[variant]
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    datamodule._on_gpu = lambda: device.type == "cuda"  # the loader a GPU run gets
    loader = datamodule.train_dataloader()
    transform = datamodule.batch_transform()
    student = build_model(cfg.model, datamodule.info).to(device).train()
    teacher = build_model(cfg.teacher.model, datamodule.info, "teacher.model")
    teacher.load_state_dict(load_file(teacher_path))
    teacher = teacher.to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    if settings["compile"]:
        student.compile()
        teacher.compile()
    optimizer = build_optimizer(student.parameters(), cfg.optim)
    dtype = torch.bfloat16 if settings["precision"] == "bf16-mixed" and device.type == "cuda" \
        else None
    # distill=kd: alpha * CE + (1 - alpha) * KL(T) * T^2
    temperature, alpha = cfg.distill.temperature, cfg.distill.alpha

    def step(inputs, labels):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            logits = student(inputs)
            kd = F.kl_div(F.log_softmax(logits / temperature, 1),
                          F.softmax(teacher_logits / temperature, 1),
                          reduction="batchmean") * temperature ** 2
            loss = alpha * F.cross_entropy(logits, labels) + (1 - alpha) * kd
        loss.backward()
        optimizer.step()

    rates = []
    for epoch in range(SCALES[options.scale]["epochs"]):
        loader.sampler.set_epoch(epoch)
        samples, started = 0, None
        for raw in loader:
            if started is None:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            moved = [t.to(device, non_blocking=True) if torch.is_tensor(t) else t for t in raw]
            # on CUDA the loader hands over RawImages, transformed here on the device
            batch = transform(RawImages(*moved)) if isinstance(raw, RawImages) else moved
            inputs, labels = batch[0], batch[1]
            step(inputs, labels)
            samples += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            rates.append(samples / (time.perf_counter() - started))
    return {"samples_per_s": median(rates)}


def teacher_weights(run_dir: str) -> str:
    """The cached teacher's weights file that the run at ``run_dir`` used."""
    record = json.loads((Path(run_dir) / "summary.json").read_text())
    path = Path(record["teachers"][0]["path"])
    if not path.exists():
        raise RuntimeError(f"the teacher of {run_dir} is not at {path}")
    return str(path)


def run(options: Options) -> Section:
    started = time.perf_counter()
    s = SCALES[options.scale]
    if s["device"] == "gpu" and not torch.cuda.is_available():
        body = ("Skipped: no CUDA device on this machine. On a GPU machine: "
                "`python -m benchmarks.gpu --scale full` (under 8 minutes on one GPU) times "
                f"KD {TEACHER} → {STUDENT} on CIFAR-10 at batch "
                f"{' and '.join(map(str, s['batches']))}, lepton-exp against a plain loop, in "
                f"{', '.join(VARIANTS)}.")
        return Section(key="gpu", title="GPU throughput", body=body,
                       seconds=time.perf_counter() - started)
    card = torch.cuda.get_device_name(0) if s["device"] == "gpu" else "CPU (smoke check)"
    rows, targets = [], []
    for batch in s["batches"]:
        for variant in VARIANTS:
            framework = framework_run(options, batch, variant)
            plain = plain_run(options, batch, variant, teacher_weights(framework["run_dir"]))
            ratio = framework["samples_per_s"] / plain["samples_per_s"]
            rows.append([str(batch), variant, f"{plain['samples_per_s']:.0f}",
                         f"{framework['samples_per_s']:.0f}", f"**{ratio:.3f}**",
                         f"{framework['test_acc']:.4f}"])
            targets.append(Target(f"GPU KD step, batch {batch}, {variant}: lepton-exp / plain "
                                  "samples/s", f"{ratio:.3f}", "reported", True))
    ddp = ("DDP: timed only with 2+ GPUs; this machine has "
           f"{torch.cuda.device_count()}." if torch.cuda.device_count() < 2 else
           "DDP with 2 GPUs: `lepton-exp trainer=ddp trainer.devices=2 ...` (not timed here).")
    body = "\n".join([
        f"Device: {card}. KD {TEACHER} (trained 1 epoch, cached) → {STUDENT}, CIFAR-10 "
        f"({s['subset']} training images), {s['epochs']} epochs, the first left out; "
        "teacher forward every step (no output cache). lepton-exp: `trainer=gpu` (batch "
        "transforms on the device, channels_last, fused SGD); plain: the same step by hand "
        "on the same loader's batches, models in channels_last.",
        "",
        markdown_table(["batch", "variant", "plain samples/s", "lepton-exp samples/s",
                        "lepton-exp / plain", "test/acc (lepton-exp)"], rows),
        "", ddp, "",
        f"Command: `python -m benchmarks.gpu --scale {options.scale}`.",
    ])
    return Section(key="gpu", title="GPU throughput", body=body, targets=targets,
                   seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main_for(run)
