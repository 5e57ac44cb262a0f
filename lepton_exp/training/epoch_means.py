"""The training epoch's logged values, kept by the module itself: adding a step's losses is
one tensor op per value on their device (no host sync); Lightning sees them once an epoch,
and every ``trainer.log_every_n_steps`` steps for the loggers. Each ``self.log`` call costs
Lightning a few hundred microseconds of bookkeeping, most of a small model's step."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torchmetrics import Metric, MetricCollection


class EpochMeans:
    """Sample-weighted means of named scalars over a training epoch, summed as Lightning sums
    an ``on_epoch`` mean (``sum += value * batch_size`` from 0.0, then ``/ samples``), so the
    figures are those Lightning would log, float for float."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.samples = 0

    def add(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in values.items():
            value = torch.as_tensor(value).detach()
            # (a scalar is its own mean: one tensor op a step less)
            weighted = (value.mean() if value.dim() else value) * batch_size
            previous = self.sums.get(name)
            # (not +=: a fresh sum is 0.0 in float32, as Lightning's, whatever the value's type)
            self.sums[name] = (torch.zeros((), device=value.device) if previous is None
                               else previous) + weighted
        self.samples += batch_size

    def means(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
              ) -> dict[str, torch.Tensor]:
        """The epoch's means; ``reduce`` sums a tensor over DDP ranks (sums and sample counts
        are reduced before the division, as Lightning's ``sync_dist``)."""
        if not self.samples:
            return {}
        samples = torch.tensor(self.samples)
        if reduce is not None:
            samples = reduce(samples.to(next(iter(self.sums.values())).device))
        return {name: (reduce(total) if reduce else total) / samples
                for name, total in self.sums.items()}

    def reset(self) -> None:
        self.sums.clear()
        self.samples = 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {name: total.detach().cpu() for name, total in self.sums.items()},
                "samples": self.samples}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.sums = {name: total.to(device) for name, total in state["sums"].items()}
        self.samples = int(state["samples"])


def metric_states(metrics: MetricCollection) -> dict[str, dict[str, torch.Tensor]]:
    """The tensor states (counts, sums) of every metric of a collection that has been
    updated (one that has not, an initialisation phase's, stays out of the epoch's logs)."""
    return {name: {key: value.detach().cpu() for key, value in metric.metric_state.items()
                   if torch.is_tensor(value)}
            for name, metric in metrics.items(keep_base=True, copy_state=False)
            if metric.update_called}


def load_metric_states(metrics: MetricCollection,
                       states: dict[str, dict[str, torch.Tensor]]) -> bool:
    """Put saved states back; False (nothing loaded) when a metric's saved states are not
    its own (a checkpoint of a version whose metric counted differently)."""
    members = dict(metrics.items(keep_base=True, copy_state=False))
    if any(not set(saved) <= set(members[name]._defaults) for name, saved in states.items()
           if name in members):
        return False
    for name, metric in members.items():
        target: Metric = metric
        for key, value in states.get(name, {}).items():
            setattr(target, key, value.to(getattr(target, key).device))
        if states.get(name):
            target._update_count = max(target._update_count, 1)  # compute() needs an update
    return True
