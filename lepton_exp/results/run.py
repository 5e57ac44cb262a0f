"""One run as result tables see it: its record (or what W&B kept of it), read by key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lepton_exp.config.identity import flatten
from lepton_exp.config.naming import method_label

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
DERIVED_KEYS = ("method", "step", "precision", "size_bytes", "latency_ms_b1")
MEASURED_KEYS = ("size_bytes", "latency_ms_b")  # derived measurements (prefixes)
# Top-level record fields that are bookkeeping, not something to tabulate or average.
_NOT_FIELDS = {"config", "metrics"}


class ResultsError(Exception):
    """A problem the user can fix (bad key, nothing found, W&B unreachable): one line."""


@dataclass
class Run:
    record: dict[str, Any]
    source: str  # the summary.json, .wandb file or W&B run path this came from
    step: str | None = None  # pipeline step name, for a step's record
    precision: str = "float32"  # int8: the int8 model of a quantized run

    @property
    def status(self) -> str:
        return self.record.get("status") or "running"

    @property
    def is_pipeline(self) -> bool:
        """A pipeline's own record: its steps are the data, it is only checked for failure."""
        return self.record.get("stage") == "pipeline"

    @property
    def overrides(self) -> list[str]:
        return list(self.record.get("overrides") or [])

    @property
    def where(self) -> str:
        return str(self.record.get("run_dir") or self.source)

    def metrics(self) -> dict[str, Any]:
        metrics = self.record.get("metrics") or {}
        if self.precision != "int8":
            return metrics
        # the int8 model's test metrics under the float names: one column compares both
        kept = {k: v for k, v in metrics.items()
                if not k.startswith(("test/", "test_best/", "test_int8/"))}
        return {**kept, **{f"test/{k.removeprefix('test_int8/')}": v
                           for k, v in metrics.items() if k.startswith("test_int8/")}}

    def measured(self, key: str) -> Any:
        """``size_bytes`` / ``latency_ms_b<N>`` of this run's deployed model, or MISSING."""
        metrics = self.record.get("metrics") or {}
        if self.precision == "int8":
            return metrics.get(f"quant/{key}", MISSING)
        if f"quant_float/{key}" in metrics:
            return metrics[f"quant_float/{key}"]
        if key == "size_bytes":
            return self.record.get("model_size_bytes", MISSING)
        return metrics.get(f"compress/{key}", MISSING)

    def lookup(self, key: str) -> Any:
        """The value of ``key`` (see the module docstring for the order), or MISSING."""
        metrics = self.metrics()
        if key in metrics:
            return metrics[key]
        if key in self.record and key not in _NOT_FIELDS:
            return self.record[key]
        value = config_value(self.record.get("config") or {}, key)
        if value is not MISSING:
            return value
        if key == "method":
            return method_name(self.record.get("config") or {})
        if key == "step":
            return self.step
        if key == "precision":
            return self.precision
        if key.startswith(MEASURED_KEYS):
            return self.measured(key)
        return MISSING

    def get(self, key: str, default: Any = None) -> Any:
        value = self.lookup(key)
        return default if value is MISSING else value

    def known_keys(self) -> set[str]:
        """Every key :meth:`lookup` resolves, for suggestions on a mistyped key."""
        config = self.record.get("config") or {}
        return ({*self.metrics(), *DERIVED_KEYS, *flatten(config),
                 *(k for k in self.record if k not in _NOT_FIELDS)})


def config_value(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def method_name(config: dict[str, Any]) -> str:
    """``at+kd`` for terms {kd, at}: sorted, so the same method always gets the same name."""
    terms = config_value(config, "distill.terms")
    return method_label(terms if isinstance(terms, dict) else None)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1, 'c': {'d': 2}} -> {'a': {'b': 1}, 'c': {'d': 2}} (W&B configs are flat)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break  # a scalar and a subtree under one name: keep the scalar
        else:
            if isinstance(value, dict) and isinstance(node.get(leaf), dict):
                node[leaf].update(value)
            else:
                node[leaf] = value
    return tree
