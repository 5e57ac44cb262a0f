"""Deployment: the CIFAR-10 KD student and the 50 %-channel-pruned resnet20 in eager PyTorch,
ONNX Runtime and ExecuTorch, float and int8 — test accuracy, file size, CPU latency at
batch 1 and 64, through the export step that ends a run with ``export=[onnx,executorch]``.

    python -m benchmarks.deploy --scale full     (whole suite: python -m benchmarks)

The models are the ones the cifar_distill (KD student, seed 0) and cifar_prune (channel,
50 %, no KD) sections trained: each is loaded from its run's export and passed through
``lepton_exp.training.deploy.deploy_output`` — nothing is retrained. Run those first.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import Options, Section, main_for, records, table_section_body

FORMATS = ("onnx", "executorch")
EXTRA_CODE = ("lepton_exp/export",)  # its figures are the exports' (common.run_section)


def trained_runs(options: Options) -> dict[str, Path]:
    """The run directories of the two models (missing ones left out)."""
    found = {}
    kd = [r for r in records(options.work_dir / "cifar_distill")
          if "kd" in (r["config"]["distill"]["terms"] or {}) and r["seed"] == 0]
    if kd:
        found["resnet8 KD student"] = Path(kd[0]["_path"])
    pruned = [r for r in records(options.work_dir / "cifar_prune")
              if r["prune"]["method"] == "channel" and r["prune"]["requested_sparsity"] == 0.5
              and not r["distill_terms"]]
    if pruned:
        found["resnet20, 50 % channels pruned"] = Path(pruned[0]["_path"])
    return found


def deploy_run(run_dir: Path, out_dir: Path) -> dict:
    """The export step (ONNX and ExecuTorch, float and int8) on a finished run's model."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from lepton_exp.config.compose import compose_config
    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model
    from lepton_exp.prune.export import load_pruned, pruned_recipe
    from lepton_exp.training.context import StageContext, StageOutput
    from lepton_exp.training.deploy import deploy_output

    record = json.loads((run_dir / "summary.json").read_text())
    cfg = OmegaConf.create(record["config"])
    # the export settings as `export=[onnx,executorch] quant=static_int8` compose them
    composed = compose_config([f"export=[{','.join(FORMATS)}]", "quant=static_int8"])
    cfg.export, cfg.quant = composed.export, composed.quant
    cfg.export.min_agreement = 0.0  # reported in the table, not a reason to stop
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    path = run_dir / "model.safetensors"
    if pruned_recipe(path):
        model = load_pruned(path)
    else:
        model = build_model(cfg.model, datamodule.info)
        model.load_state_dict(load_file(str(path)))
    out_dir.mkdir(parents=True, exist_ok=True)
    output = deploy_output(StageContext(cfg, out_dir, datamodule, []),
                           StageOutput(model.eval(), {}))
    return {"record": record, "deploy": output.extra["deploy"],
            "batch": cfg.export.latency_batch}


def run(options: Options) -> Section:
    runs = trained_runs(options)
    rows, notes = [], []
    for label, run_dir in runs.items():
        result = deploy_run(run_dir, options.work_dir / "deploy" / run_dir.name)
        batch = f"latency_ms_b{result['batch']}"
        exports = result["deploy"]["exports"]
        for key, export in exports.items():
            if export.get("skipped"):
                notes.append(f"{label}, {key}: skipped ({export['skipped']})")
                continue
            size = export.get("file_bytes", result["record"]["model_size_bytes"])
            rows.append([label, export["runtime"], export["precision"],
                         f"{100 * export['test']['acc']:.2f}", f"{size / 1024:.0f}",
                         f"{export['latency_ms_b1']:.3f}", f"{export[batch]:.3f}",
                         f"{export['max_abs_diff']:.2g}" if "max_abs_diff" in export else "-",
                         f"{export['top1_agreement']:.3f}" if "top1_agreement" in export
                         else "-", "yes" if export.get("latency_busy") else "no"])
        notes.append(f"{label}: run `{run_dir}`, exports in `{result['deploy']['dir']}` "
                     f"({result['deploy']['threads']} threads).")
    missing = [label for label in ("resnet8 KD student", "resnet20, 50 % channels pruned")
               if label not in runs]
    body = table_section_body(
        ("The models trained by the sections above, through the export step a run with "
         "`export=[onnx,executorch] quant=static_int8` ends with "
         "(`lepton_exp/training/deploy.py`): ONNX (torch's dynamo exporter; int8: QDQ by "
         "onnxruntime.quantization, calibrated on 8 training batches) in ONNX Runtime, and "
         "ExecuTorch (XNNPACK; int8: XNNPACK's quantizer) in the ExecuTorch runtime. Test "
         "accuracy on the whole CIFAR-10 test split in each runtime; bytes of each file "
         "(eager: the model's tensors); latency: the median forward time on this CPU, all "
         "of a model's variants timed in turns; max |Δ| and top-1 = compare the logits with "
         "the eager model on the first two test batches."),
        ["model", "runtime", "precision", "test acc %", "KiB",
         "latency b1 (ms)", "latency b64 (ms)", "max |Δ|", "top-1 =",
         "busy"], rows, notes, missing,
        "`python -m benchmarks.deploy --scale full` (a user's run: add "
        "`export=[onnx,executorch]`, and `quant=static_int8` for the int8 files).")
    return Section("deploy", "Deployment: eager, ONNX Runtime and ExecuTorch", body, [])


if __name__ == "__main__":
    main_for(run)
