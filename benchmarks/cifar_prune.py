"""Pruning on real data: CIFAR-10 accuracy vs sparsity (0 / 50 / 70 / 90 %), unstructured
(magnitude) and structured (channel) pruning, finetuned with and without KD from the dense
model; and the CPU latency of channel-pruned models vs the dense one, timed here, alone.

    python -m benchmarks.cifar_prune --scale full     (whole suite: python -m benchmarks)

The dense model is the shared resnet20 teacher of `benchmarks/cifar_setup.py`.
"""

from __future__ import annotations

import timm
import torch
from safetensors.torch import load_file

from benchmarks import cifar_setup
from benchmarks.common import (
    Options,
    Section,
    Target,
    command_text,
    main_for,
    markdown_table,
    records,
    run_cli,
)

SPARSITIES = ["0.5", "0.7", "0.9"]
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
SCALES = {"full": dict(finetune_epochs=2, latency_repeats=30),
          "smoke": dict(finetune_epochs=1, latency_repeats=3)}


def sweeps(options: Options, weights) -> dict[str, list[str]]:
    s = cifar_setup.settings(options)
    base = ["stage=prune", *cifar_setup.data_overrides(options), "data.augment=false",
            f"model={s['teacher']}", f"prune.dense.checkpoint={weights}",
            f"prune.finetune_epochs={SCALES[options.scale]['finetune_epochs']}",
            "prune.finetune_lr=0.01", "logger=csv", *PARALLEL]
    kd = ["distill=kd", "prune.teacher=dense"]
    # 0 %: the dense model finetuned the same way (one row serves both methods)
    grids = {"magnitude": ["prune=magnitude", "prune.sparsity=0," + ",".join(SPARSITIES)],
             "channel": ["prune=channel", "prune.sparsity=" + ",".join(SPARSITIES)]}
    root = options.work_dir / "cifar_prune"
    return {f"{name}{'_kd' if with_kd else ''}":
            ["-m", *base, *grid, *(kd if with_kd else []),
             f"hydra.sweep.dir={root / (name + ('_kd' if with_kd else ''))}"]
            for name, grid in grids.items() for with_kd in (False, True)}


def latencies(options: Options, dense_weights, pruned: dict[str, str]) -> dict[str, float]:
    """Median batch-64 forward time (ms) of the dense model and the channel-pruned exports,
    timed in turns in this process, with all cores."""
    import lepton_exp.models  # noqa: F401 - registers the CIFAR ResNets with timm
    from lepton_exp.measure import latencies_ms
    from lepton_exp.prune.export import load_pruned

    s = cifar_setup.settings(options)
    dense = timm.create_model(s["teacher"], num_classes=10)
    dense.load_state_dict(load_file(str(dense_weights)))
    models = {"dense": dense.eval(), **{k: load_pruned(path) for k, path in pruned.items()}}
    batch = torch.randn(64, 3, 32, 32)
    times = latencies_ms(list(models.values()), batch,
                         repeats=SCALES[options.scale]["latency_repeats"], warmup=3)
    return dict(zip(models, times, strict=True))


def run(options: Options) -> Section:
    teacher = cifar_setup.teacher(options)
    commands = sweeps(options, teacher["exported"])
    for name, overrides in commands.items():
        run_cli(overrides, options, f"cifar_prune_{name}")
    found: dict[tuple[str, float, bool], dict] = {}
    for record in records(options.work_dir / "cifar_prune"):
        prune = record["prune"]
        key = (prune["method"], prune["requested_sparsity"], bool(record["distill_terms"]))
        found[key] = record
    channel_exports = {f"channel {float(s):.0%}": found[("channel", float(s), False)]["exported"]
                       for s in SPARSITIES if ("channel", float(s), False) in found}
    times = latencies(options, teacher["exported"], channel_exports)

    def cell(method: str, sparsity: float, kd: bool) -> str:
        record = found.get(("magnitude" if sparsity == 0 else method, sparsity, kd))
        return f"{record['metrics']['test/acc'] * 100:.2f}" if record else "-"

    rows = []
    for method in ("magnitude", "channel"):
        for sparsity in [0.0, *map(float, SPARSITIES)]:
            record = found.get(("magnitude" if sparsity == 0 else method, sparsity, False))
            pruned = record["compression"]["pruned"] if record else {}
            rows.append([method if sparsity else f"{method} (dense, finetuned)", f"{sparsity:.0%}",
                         f"{pruned.get('sparsity', 0):.3f}" if pruned else "-",
                         f"{pruned.get('nonzero_params', 0):,}" if pruned else "-",
                         f"{record['metrics'].get('test_pruned/acc', float('nan')) * 100:.2f}"
                         if record and sparsity else "-",
                         cell(method, sparsity, False), cell(method, sparsity, True)])
    latency_rows = [[name, f"{ms:.1f}", f"{times['dense'] / ms:.2f}x"]
                    for name, ms in times.items()]
    speedup = times["dense"] / times["channel 50%"] if "channel 50%" in times else float("nan")
    s = cifar_setup.settings(options)
    body = (
        f"Setup: the dense model is the {s['teacher']} teacher of the distillation section "
        f"(test accuracy {teacher['metrics']['test/acc'] * 100:.2f} %), pruned in one shot and "
        f"finetuned {SCALES[options.scale]['finetune_epochs']} epochs at lr 0.01 on the same "
        f"{s['train_subset']:,}-image subset (no augmentation); with KD: `distill=kd "
        "prune.teacher=dense` (T = 4, alpha = 0.1, the dense model as teacher). Magnitude: "
        "per-layer L1 unstructured masks (`torch.nn.utils.prune`), first and last layer dense; "
        "channel: that fraction of each prunable layer's output channels removed "
        "(torch-pruning, L1 importance). One seed per cell. `test acc, pruned` is before "
        "finetuning.\n\n"
        + markdown_table(["method", "requested", "measured zero fraction", "non-zero params",
                          "test acc %, pruned", "test acc %, finetuned", "finetuned with KD"],
                         rows)
        + "\n\nCPU latency at batch 64 (median of "
        f"{SCALES[options.scale]['latency_repeats']} forwards, models timed in turns, this "
        "process alone, all cores; magnitude-pruned models run the same dense kernels as the "
        "dense one):\n\n" + markdown_table(["model", "ms / batch of 64", "speed-up"], latency_rows)
        + "\n\nCommands (from the repo, `LEPTON_DATA_DIR` set):\n\n```bash\n"
        + "\n".join(command_text(c) for c in commands.values()) + "\n```")
    return Section("cifar_prune", "Pruning on CIFAR-10", body,
                   [Target("50 %-channel-pruned vs dense, CPU latency at batch 64",
                           f"{speedup:.2f}x faster", "≥ 1.6x", speedup >= 1.6)])


if __name__ == "__main__":
    main_for(run)
