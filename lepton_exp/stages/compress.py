"""Compress stage: a model trained elsewhere (a finished run, its ``model.safetensors``, a
checkpoint) quantized and/or exported without training it again, as a run of its own
(``lepton-exp from_run=<run dir> quant=static_int8 export=[onnx,executorch]``).

The model is loaded as teachers are (lepton_exp.teachers.load: pruned exports rebuilt from
their recipe, a file that does not fit the configured model named in one line), tested as
it is, then the runner's quantization and export steps do the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from lepton_exp.stages import Stage, StageContext, StageOutput


class CompressStage(Stage):
    def check(self, cfg) -> Iterable[Optional[str]]:
        from lepton_exp.config.registries import NONE

        if not cfg.from_run:
            yield ("stage=compress needs from_run=<a finished run's directory, its "
                   "model.safetensors or a checkpoint>")
        if cfg.quant.method == NONE and not cfg.export.formats:
            yield ("from_run: nothing to do without quant=... or export=... (e.g. "
                   "quant=static_int8 export=[onnx,executorch])")
        if cfg.distill.terms or cfg.prune.method != NONE:
            yield ("from_run compresses a trained model as it is: drop distill=/prune= (a "
                   "prune run takes its dense model as prune.dense.checkpoint)")

    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        return f"compress-{model}-{data}"

    def resume_point(self, cfg, run_dir: Path) -> Optional[Path]:
        return None  # nothing trained: an unfinished attempt starts over

    def run(self, ctx: StageContext) -> StageOutput:
        from omegaconf import OmegaConf

        from lepton_exp.teachers.load import load_trained
        from lepton_exp.training.classify import ClassificationModule
        from lepton_exp.training.trainer import evaluate

        cfg, datamodule = ctx.cfg, ctx.datamodule
        path = source_file(cfg.from_run, cfg.data.name, cfg.model.name)
        model, source = load_trained(cfg, "from_run", OmegaConf.create(
            {"checkpoint": str(path), "artifact": None}), cfg.model, "model",
            datamodule.info, train=None)
        model.eval()
        metrics = evaluate(ClassificationModule(model, datamodule.info, cfg.optim,
                                                cfg.scheduler), datamodule, "test", cfg.trainer)
        return StageOutput(model=model, metrics=metrics, extra={"from_run": source})


def source_file(given: str, data_name: str, model_name: str) -> Path:
    """The weights ``from_run`` names: a file as it is, a run directory's model.safetensors
    (whose record must show the same data set and model)."""
    from lepton_exp.errors import ConfigError
    from lepton_exp.tracking.record import RECORD_NAME

    path = Path(given).expanduser()
    if not path.is_dir():
        return path  # (a missing file is reported by the loader, in one line)
    record_path, weights = path / RECORD_NAME, path / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"from_run={path} holds no model.safetensors: give a finished run's "
                          "directory, or the weights file itself")
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        trained_on = ((record.get("config") or {}).get("data") or {}).get("name")
        if record.get("status") != "completed":
            raise ConfigError(f"from_run={path} is a run that did not complete "
                              f"({record.get('status')}): finish it first (run its command "
                              "again) or point at its checkpoint")
        model = ((record.get("config") or {}).get("model") or {}).get("name")
        if (trained_on, model) != (data_name, model_name) and trained_on and model:
            raise ConfigError(f"from_run={path} is a {model} trained on data={trained_on}, "
                              f"not a {model_name} on data={data_name}: add "
                              f"data={trained_on} model={model} (the run's own settings)")
    return weights


STAGE = CompressStage()
