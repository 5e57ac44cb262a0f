"""Supervised classification (the teacher stage, and any baseline student); regression
(one real-valued output, MSE) for data that says so (GLUE STS-B)."""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from lepton_exp.data.base import DataInfo
from lepton_exp.distill.objective import label_loss
from lepton_exp.errors import ConfigError, LeptonError
from lepton_exp.models.taps import model_logits
from lepton_exp.training.epoch_means import EpochMeans, load_metric_states, metric_states
from lepton_exp.training.optim import build_optimizer, build_scheduler
from lepton_exp.training.trainer import training_horizon


class PositiveClassF1(BinaryF1Score):
    """F1 of class 1 from N x 2 logits: GLUE's F1 of MRPC (equivalent) and QQP (duplicate)."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        super().update(logits.argmax(dim=1), labels)


class TopOneAccuracy(Metric):
    """Top-1 accuracy as a count of correct predictions: the value of torchmetrics'
    ``MulticlassAccuracy(average="micro")`` float for float (the same argmax, the same
    division), for under half of its cost a step (an update: 20 against 49 us at batch 64,
    10 classes, one thread; it counts confusion statistics per class)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        predicted = logits.argmax(dim=1) if logits.ndim == labels.ndim + 1 else logits
        # in place, as += is, without setting the attribute again (torchmetrics' and
        # nn.Module's __setattr__: ~1.5 us each)
        self.correct.add_((predicted == labels).sum())
        self.total.add_(labels.numel())

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.float()


# Metrics by name (DataInfo.metrics), from (logits or, for regression, predictions, labels).
METRICS = {
    "acc": lambda classes: TopOneAccuracy(),
    "acc_top5": lambda classes: MulticlassAccuracy(classes, top_k=5, average="micro"),
    "f1": lambda classes: MulticlassF1Score(classes, average="macro"),
    "f1_pos": lambda classes: PositiveClassF1(),
    "mcc": lambda classes: MulticlassMatthewsCorrCoef(classes),
    "pearson": lambda classes: PearsonCorrCoef(),
    "spearman": lambda classes: SpearmanCorrCoef(),
}


def metric_names(info: DataInfo) -> tuple[str, ...]:
    """The data's metrics; by default accuracy (+ top-5 above 10 classes), and for text the
    macro F1 and Matthews correlation GLUE reports beside accuracy."""
    if info.metrics:
        return info.metrics
    extra = ("f1", "mcc") if info.is_text else ()
    return ("acc", *(("acc_top5",) if info.num_classes > 10 else ()), *extra)


def classification_metrics(info: DataInfo) -> MetricCollection:
    metrics: dict[str, Metric] = {}
    for name in metric_names(info):
        if name not in METRICS:
            raise ConfigError(f"unknown metric '{name}' in the data set's metrics: use "
                              f"{', '.join(METRICS)}")
        metrics[name] = METRICS[name](info.num_classes)
    # No compute groups: these metrics share no state to compute once, and looking for
    # shared states costs a training step ~17 us (a third of its metric update)
    return MetricCollection(metrics, compute_groups=False)


log = logging.getLogger(__name__)
TRAIN_EPOCH_KEY = "lepton_train_epoch"  # the checkpoint's entry for the unfinished epoch


class NonFiniteLossError(LeptonError):
    pass


def non_finite_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    """``name=value`` of every term that is NaN or infinite."""
    return [f"{name}={float(value)}" for name, value in terms.items()
            if torch.is_tensor(value) and not bool(torch.isfinite(value).all())]


class ClassificationModule(pl.LightningModule):
    """Wires a model to its label loss (cross-entropy; MSE for regression data), the data's
    metrics and the configured optimiser.

    Metrics are logged as ``<split>/<name>`` (``train/loss``, ``val/acc``, ``test/acc``).
    ``test_prefix`` renames the test split, so one run can report the last and the
    best-validation checkpoints side by side (``test/acc`` and ``test_best/acc``); the
    data's further test splits follow it (``test_mismatched/acc``, ``test_best_mismatched/acc``).
    The first metric picks the best epoch (``monitor``: ``val/acc``; STS-B ``val/pearson``).
    """

    def __init__(self, model: nn.Module, info: DataInfo, optim_cfg, scheduler_cfg):
        super().__init__()
        self.model = model
        self.optim_cfg = optim_cfg
        self.scheduler_cfg = scheduler_cfg
        self.test_prefix = "test"
        self.regression = info.regression
        self.extra_tests = info.extra_tests
        self.monitor = f"val/{metric_names(info)[0]}"
        # Lets Lightning's model summary show input/output sizes and FLOPs (images).
        if not info.is_text:
            self.example_input_array = torch.zeros(1, *info.input_shape)
        base = classification_metrics(info)
        evaluated = ("val", "test", *(f"test_{name}" for name in info.extra_tests))
        # ModuleDict keys must not shadow nn.Module attributes ("train"), hence the suffix.
        self.metrics = nn.ModuleDict(
            {f"{split}_metrics": base.clone() for split in ("train", *evaluated)})
        self.train_metric_list = tuple(self.metrics["train_metrics"].values(copy_state=False))
        # Evaluation losses as sample-weighted means that sync sums and counts over DDP
        # ranks: the ranks' shards differ in size by up to one sample.
        self.eval_losses = nn.ModuleDict({split: MeanMetric() for split in evaluated})
        # train/loss (and the distillation terms) of the running epoch, summed by the module
        # (lepton_exp.training.epoch_means): one tensor op a step instead of a self.log call
        self.train_means = EpochMeans()

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name before and after each hook it calls (~50 times a
        # training step); a plain attribute, it skips nn.Module's checks for parameters,
        # modules and buffers (~1 us each: a Python-level isinstance against Parameter).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        # Lightning calls this every step and passes trainer.gradient_clip_val (None when
        # unset); its own path then checks the settings to clip by 0 (~10 us a step)
        if gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)

    def forward(self, inputs) -> torch.Tensor:
        return model_logits(self.model, inputs)

    @property
    def test_prefixes(self) -> tuple[str, ...]:
        """Where the test splits' metrics go: ``test_prefix``, then one per further split."""
        return (self.test_prefix, *(f"{self.test_prefix}_{name}" for name in self.extra_tests))

    def _step(self, batch, split: str) -> torch.Tensor:
        inputs, labels = batch[0], batch[1]
        logits = self(inputs)
        loss = label_loss(logits, labels, self.regression)
        if split == "train":
            self.update_train_metrics(logits, labels)
            self.log_train({"loss": loss}, len(labels))
        else:
            self.log_split(split, logits, labels, loss)
        return loss

    def update_train_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The step's outputs into the training epoch's metrics (train/acc, ...)."""
        outputs = logits.detach()
        if self.regression:
            outputs = outputs.squeeze(-1)
        # each metric's own update: the collection's also matches each one's keyword
        # arguments and builds its name map (~4 us a step)
        for metric in self.train_metric_list:
            metric.update(outputs, labels)

    def log_train(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """A training step's values (``loss``, the terms' ``loss_<name>``, ...) into the
        epoch's means, logged as ``train/<name>_epoch`` at its end (``train/<name>`` in the
        record); the loggers also get them as ``train/<name>_step`` every
        ``trainer.log_every_n_steps`` steps, when there are loggers."""
        self.train_means.add(values, batch_size)
        trainer = self.trainer
        if trainer.loggers and trainer._logger_connector.should_update_logs:
            # (each rank's own values: a sync here would cost every rank a collective;
            # scheduled weights and temperatures are floats)
            self.log_dict({f"train/{name}_step": value.detach() if torch.is_tensor(value)
                           else value for name, value in values.items()},
                          on_step=True, on_epoch=False, batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        """The epoch's means (summed over DDP ranks, then divided) and train metrics."""
        trainer = self.trainer
        reduce = None
        if trainer.world_size > 1:
            def reduce(tensor: torch.Tensor) -> torch.Tensor:
                return trainer.strategy.reduce(tensor, reduce_op="sum")
        values = {f"train/{name}_epoch": mean
                  for name, mean in self.train_means.means(reduce).items()}
        metrics = self.metrics["train_metrics"]
        if any(metric.update_called for metric in metrics.values()):
            # (compute() syncs the metrics' states over DDP ranks itself)
            values.update({f"train/{name}": value for name, value in metrics.compute().items()})
        metrics.reset()
        self.train_means.reset()
        if values:
            self.log_dict(values, on_step=False, on_epoch=True)

    # A checkpoint taken inside an epoch (a stop, checkpoint_every_minutes) carries what the
    # epoch has summed so far: the resumed run's epoch figures then cover all its batches.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TRAIN_EPOCH_KEY] = {
            "means": self.train_means.state_dict(),
            "metrics": metric_states(self.metrics["train_metrics"])}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(TRAIN_EPOCH_KEY)
        if state is not None:
            self.train_means.load_state_dict(state["means"], self.device)
            if not load_metric_states(self.metrics["train_metrics"], state["metrics"]):
                log.warning("this checkpoint's train metrics were counted by an older "
                            "lepton-exp: the resumed epoch's train/* metrics cover only its "
                            "batches from here on (train/loss all of them)")

    def log_split(self, split: str, logits: torch.Tensor, labels: torch.Tensor,
                  loss: torch.Tensor) -> None:
        """Update and log ``<split>/loss`` and the split's metrics (``split``: val, test or
        test_<name>)."""
        metrics = self.metrics[f"{split}_metrics"]
        outputs = logits.detach()
        metrics.update(outputs.squeeze(-1) if self.regression else outputs, labels)
        prefix = self.test_prefix + split.removeprefix("test") if split.startswith("test") \
            else split
        # torchmetrics sync themselves at compute, over DDP ranks
        self.eval_losses[split].update(loss.detach(), weight=len(labels))
        self.log(f"{prefix}/loss", self.eval_losses[split], on_step=False, on_epoch=True,
                 batch_size=len(labels), add_dataloader_idx=False)
        # (several test loaders: the split's own names, not Lightning's /dataloader_idx_<i>)
        self.log_dict({f"{prefix}/{name}": metric for name, metric in metrics.items()},
                      on_step=False, on_epoch=True, prog_bar=split == "val",
                      batch_size=len(labels), add_dataloader_idx=False)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self.stop_if_not_finite(loss, {"mse" if self.regression else "cross_entropy": loss})
        return loss

    def stop_if_not_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Stop the run before a NaN/Inf loss reaches the weights: last.ckpt stays the last
        good state, and the error names the term that went bad."""
        # one check per step (a host sync, as bool() of a tensor), the terms only when it
        # fails; item() then a float check: ~8 us a step less than torch.isfinite's op
        if math.isfinite(loss.item()):
            return
        bad = non_finite_terms(terms) or [f"loss={float(loss)}"]
        last = self.trainer.default_root_dir + "/checkpoints/last.ckpt"
        raise NonFiniteLossError(
            f"the training loss became {float(loss)} at step {self.global_step} (epoch "
            f"{self.current_epoch}) from {', '.join(bad)}: lower optim.lr or set "
            f"trainer.gradient_clip_val; the last good checkpoint is {last}")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        # loader 0: the test split; loader i: the data's i-th further test split
        self._step(batch, f"test_{self.extra_tests[dataloader_idx - 1]}" if dataloader_idx
                   else "test")

    def configure_optimizers(self):
        # Frozen modules (a distillation teacher) have no gradients and no optimiser state.
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, self.optim_cfg)
        _, steps_per_epoch = training_horizon(self.trainer)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, max_epochs, steps_per_epoch)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
