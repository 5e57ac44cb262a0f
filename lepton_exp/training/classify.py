"""Supervised classification (the teacher stage, and any baseline student)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)

from lepton_exp.data.base import DataInfo
from lepton_exp.errors import LeptonError
from lepton_exp.models.taps import model_logits
from lepton_exp.training.optim import build_optimizer, build_scheduler
from lepton_exp.training.trainer import training_horizon


def classification_metrics(num_classes: int, text: bool = False) -> MetricCollection:
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 10:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    if text:  # GLUE reports F1 and Matthews correlation beside accuracy
        metrics["f1"] = MulticlassF1Score(num_classes, average="macro")
        metrics["mcc"] = MulticlassMatthewsCorrCoef(num_classes)
    return MetricCollection(metrics)


class NonFiniteLossError(LeptonError):
    pass


def non_finite_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    """``name=value`` of every term that is NaN or infinite."""
    return [f"{name}={float(value)}" for name, value in terms.items()
            if torch.is_tensor(value) and not bool(torch.isfinite(value).all())]


class ClassificationModule(pl.LightningModule):
    """Wires a model to cross-entropy, accuracy metrics and the configured optimiser.

    Metrics are logged as ``<split>/<name>`` (``train/loss``, ``val/acc``, ``test/acc``).
    ``test_prefix`` renames the test split, so one run can report the last and the
    best-validation checkpoints side by side (``test/acc`` and ``test_best/acc``).
    """

    def __init__(self, model: nn.Module, info: DataInfo, optim_cfg, scheduler_cfg):
        super().__init__()
        self.model = model
        self.optim_cfg = optim_cfg
        self.scheduler_cfg = scheduler_cfg
        self.test_prefix = "test"
        # Lets Lightning's model summary show input/output sizes and FLOPs (images).
        if not info.is_text:
            self.example_input_array = torch.zeros(1, *info.input_shape)
        base = classification_metrics(info.num_classes, text=info.is_text)
        # ModuleDict keys must not shadow nn.Module attributes ("train"), hence the suffix.
        self.metrics = nn.ModuleDict(
            {f"{split}_metrics": base.clone() for split in ("train", "val", "test")})
        # Evaluation losses as sample-weighted means that sync sums and counts over DDP
        # ranks: the ranks' shards differ in size by up to one sample.
        self.eval_losses = nn.ModuleDict({split: MeanMetric() for split in ("val", "test")})

    def forward(self, inputs) -> torch.Tensor:
        return model_logits(self.model, inputs)

    def _step(self, batch, split: str) -> torch.Tensor:
        inputs, labels = batch[0], batch[1]
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels)
        self.log_split(split, logits, labels, loss)
        return loss

    def log_split(self, split: str, logits: torch.Tensor, labels: torch.Tensor,
                  loss: torch.Tensor) -> None:
        """Update and log ``<split>/loss`` and the split's accuracy metrics."""
        metrics = self.metrics[f"{split}_metrics"]
        metrics.update(logits.detach(), labels)
        prefix = self.test_prefix if split == "test" else split
        if split == "train":  # equal batches on every rank: the mean of the ranks' means
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                     batch_size=len(labels), sync_dist=True)
        else:  # torchmetrics sync themselves at compute, over DDP ranks
            self.eval_losses[split].update(loss.detach(), weight=len(labels))
            self.log(f"{prefix}/loss", self.eval_losses[split], on_step=False, on_epoch=True,
                     batch_size=len(labels))
        self.log_dict({f"{prefix}/{name}": metric for name, metric in metrics.items()},
                      on_step=False, on_epoch=True, prog_bar=split == "val",
                      batch_size=len(labels))

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self.stop_if_not_finite(loss, {"cross_entropy": loss})
        return loss

    def stop_if_not_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Stop the run before a NaN/Inf loss reaches the weights: last.ckpt stays the last
        good state, and the error names the term that went bad."""
        if bool(torch.isfinite(loss)):  # one check per step; the terms only when it fails
            return
        bad = non_finite_terms(terms) or [f"loss={float(loss)}"]
        last = self.trainer.default_root_dir + "/checkpoints/last.ckpt"
        raise NonFiniteLossError(
            f"the training loss became {float(loss)} at step {self.global_step} (epoch "
            f"{self.current_epoch}) from {', '.join(bad)}: lower optim.lr or set "
            f"trainer.gradient_clip_val; the last good checkpoint is {last}")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

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
