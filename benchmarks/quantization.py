"""Float vs int8: a CIFAR-10 CNN student (static int8) and the SST-2 BERT student (dynamic
int8) — test accuracy, bytes and CPU latency, through the quant step that ends a run.

    python -m benchmarks.quantization --scale full     (whole suite: python -m benchmarks)

The float models are the ones the cifar_distill (KD student, seed 0) and sst2 (distilled
bert_mini) sections trained; each is loaded from its run's export and passed through
``lepton_exp.training.quantize.quantize_output`` — the code a run with ``quant=...`` ends
with — so nothing is retrained. Run those sections first.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import Options, Section, main_for, records, table_section_body

METHODS = {"cnn": "static_int8", "bert": "dynamic_int8"}


def trained_runs(options: Options) -> dict[str, Path]:
    """The run directories of the two float students (missing ones left out)."""
    found = {}
    kd = [r for r in records(options.work_dir / "cifar_distill")
          if "kd" in (r["config"]["distill"]["terms"] or {}) and r["seed"] == 0]
    if kd:
        found["cnn"] = Path(kd[0]["_path"])
    pipeline = options.work_dir / "sst2" / "summary.json"
    if pipeline.is_file():
        step = json.loads(pipeline.read_text())["steps"].get("distilled") or {}
        if step.get("status") == "completed":
            found["bert"] = Path(step["run_dir"])
    return found


def quantize_run(run_dir: Path, method: str, out_dir: Path) -> dict:
    """The quant step on a finished run's float model: its metrics and quant block."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model
    from lepton_exp.training.context import StageContext, StageOutput
    from lepton_exp.training.quantize import quantize_output

    record = json.loads((run_dir / "summary.json").read_text())
    cfg = OmegaConf.create(record["config"])
    cfg.quant = OmegaConf.merge(cfg.get("quant") or {}, OmegaConf.load(
        Path(__file__).resolve().parent.parent / "conf" / "quant" / f"{method}.yaml"))
    cfg.quant.setdefault("skip", [])
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    model = build_model(cfg.model, datamodule.info)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    out_dir.mkdir(parents=True, exist_ok=True)
    output = quantize_output(StageContext(cfg, out_dir, datamodule, []),
                             StageOutput(model.eval(), {}))
    return {"record": record, "metrics": output.metrics, "quant": output.extra["quant"],
            "batch": cfg.quant.latency_batch}


def run(options: Options) -> Section:
    runs = trained_runs(options)
    rows, notes = [], []
    labels = {"cnn": "resnet8 KD student, CIFAR-10", "bert": "bert_mini distilled, SST-2"}
    for kind, run_dir in runs.items():
        result = quantize_run(run_dir, METHODS[kind], options.work_dir / "quant" / kind)
        quant, metrics, record = result["quant"], result["metrics"], result["record"]
        batch = f"latency_ms_b{result['batch']}"
        for side, accuracy in (("float", record["metrics"]["test/acc"]),
                               ("int8", metrics["test_int8/acc"])):
            numbers = quant[side]
            rows.append([labels[kind], "float32" if side == "float" else METHODS[kind],
                         f"{accuracy * 100:.2f}", f"{numbers['size_bytes'] / 1024:.0f}",
                         f"{numbers['latency_ms_b1']:.2f}",
                         f"{numbers[batch]:.1f} (b{result['batch']})"])
        fallback = quant["fallback"]
        notes.append(f"- {labels[kind]}: {len(quant['layers']) - len(fallback)} layers int8"
                     + (f"; float fallback: {', '.join(sorted(fallback))} "
                        f"({next(iter(fallback.values()))['why']})" if fallback else "")
                     + f"; export `{Path(quant['exported']).name}` "
                     f"{quant['int8']['file_bytes'] / 1024:.0f} KiB. Float run: `{run_dir}`")
    missing = [labels[k] for k in METHODS if k not in runs]
    body = table_section_body(
        ("The float models trained by the sections above, quantized by the step a run with "
         "`quant=...` ends with (`lepton_exp/training/quantize.py`): static int8 through "
         "torchao's PyTorch 2 export quantization with the x86 quantizer, calibrated on 8 "
         "training batches, timed lowered to oneDNN int8 kernels; dynamic int8 of the "
         "Linear layers with fbgemm kernels. Accuracy on the full test sets; bytes are the "
         "tensors each model holds; latency is the median forward time on this CPU, float "
         "and int8 timed in turns (CNN: 3x32x32 images; BERT: full-length 48-token "
         "inputs)."),
        ["model", "precision", "test acc %", "KiB", "latency b1 (ms)",
         "latency batch (ms)"], rows, notes, missing,
        "`python -m benchmarks.quantization --scale full` (a user's run: add "
        "`quant=static_int8` or `quant=dynamic_int8` to its command).")
    return Section("quant", "Quantization: float vs int8", body, [])


if __name__ == "__main__":
    main_for(run)
