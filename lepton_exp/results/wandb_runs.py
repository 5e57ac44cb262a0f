"""Run records from Weights & Biases: a project through the public API, or offline run logs.

Both give what a ``summary.json`` would: status, config (nested), metrics (the W&B summary),
``num_params``/``model_size_bytes``/``wall_time_s``. Overrides come from the Hydra job's
``.hydra/overrides.yaml`` when the run directory still has it (offline logs only).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lepton_exp.results.run import ResultsError, Run, unflatten

# W&B run states -> run record statuses.
STATES = {"finished": "completed", "failed": "failed", "crashed": "failed",
          "killed": "interrupted", "running": "running", "pending": "running"}
RECORD_FIELDS = ("num_params", "model_size_bytes", "wall_time_s")


def record_from_wandb(config: dict[str, Any], summary: dict[str, Any], status: str,
                      name: str | None, **extra: Any) -> dict[str, Any]:
    """A run record from a W&B run's flat config and summary (``_``-keys are W&B's own)."""
    config = unflatten({k: v for k, v in config.items() if not k.startswith("_")})
    metrics = {k: v for k, v in summary.items()
               if not k.startswith("_") and not isinstance(v, (dict, list))}
    fields = {k: metrics.pop(k) for k in RECORD_FIELDS if k in metrics}
    return {"status": status, "stage": config.get("stage"), "name": name or config.get("name"),
            "seed": config.get("seed"), "config": config, "metrics": metrics, **fields,
            **extra}


# -- the W&B public API ---------------------------------------------------------------------

def fetch_project_runs(project: str, group: str | None = None) -> list[Run]:
    """Runs of ``entity/project`` (optionally one group); ResultsError if W&B can't answer."""
    try:
        import wandb

        api = wandb.Api(timeout=20)
        api_runs = list(api.runs(project, filters={"group": group} if group else None))
        runs = [_api_run(run, project) for run in api_runs]
    except Exception as error:  # no key, no network, no project: one line
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise ResultsError(f"W&B project {project} unreachable ({reason}); use the sweep "
                           "directory instead") from error
    if not runs:
        raise ResultsError(f"W&B project {project} has no runs"
                           + (f" in group {group}" if group else ""))
    return runs


def _api_run(run: Any, project: str) -> Run:
    summary = getattr(run, "summary_metrics", None) or dict(run.summary)
    record = record_from_wandb(dict(run.config), summary, STATES.get(run.state, run.state),
                               run.name, run_dir=None, overrides=None,
                               wandb={"id": run.id, "url": getattr(run, "url", None),
                                      "group": getattr(run, "group", None)})
    return Run(record, f"wandb:{project}/{run.id}")


# -- offline run logs -----------------------------------------------------------------------
# A ``run-<id>.wandb`` file is a LevelDB-style log of protobuf records: a 7-byte file header,
# then 32 KiB blocks of chunks (crc32, length, type) that join into records. wandb >= 0.2x
# no longer ships a Python reader (its DataStore moved into the Go core), so this is one.

_FILE_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32 of (type byte + data), data length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def log_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a W&B transaction log, up to the first damaged chunk (a
    killed run leaves a torn tail: everything before it is still good)."""
    data = Path(path).read_bytes()
    if len(data) < _FILE_HEADER.size:
        return
    ident, magic, _version = _FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ResultsError(f"{path} is not a W&B run log")
    pos, parts = _FILE_HEADER.size, []
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # block trailer: zero padding
            pos += left_in_block
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER.size: pos + _CHUNK_HEADER.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _CHUNK_HEADER.size + length
        if kind in (_FULL, _FIRST):
            parts = [chunk]
        else:
            parts.append(chunk)
        if kind in (_FULL, _LAST):
            yield b"".join(parts)


def read_offline_run(log: Path, run_dir: Path) -> dict[str, Any]:
    """A run record from an offline run's log: config, summary (the last value of every
    logged metric, then explicit summary updates, in log order, as W&B itself does)."""
    from wandb.proto import wandb_internal_pb2

    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    name, exit_code = None, None
    for raw in log_records(log):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # noqa: BLE001, S112 - a record from a newer W&B: skip it
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name or None
            _apply(config, record.run.config.update)
            _apply(summary, record.run.summary.update)
        elif kind == "config":
            _apply(config, record.config.update)
        elif kind == "summary":
            _apply(summary, record.summary.update)
        elif kind == "history":
            _apply(summary, record.history.item)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    status = "running" if exit_code is None else "completed" if exit_code == 0 else "failed"
    return record_from_wandb(config, summary, status, name, run_dir=str(run_dir),
                             overrides=_hydra_overrides(run_dir),
                             wandb={"offline_log": str(log)})


def _apply(target: dict[str, Any], items: Any) -> None:
    for item in items:
        key = item.key or ".".join(item.nested_key)
        # History items may carry a typed value instead of JSON (newer W&B cores).
        typed = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
        text = item.json if typed == "json" else item.value_json
        if typed == "none":
            target[key] = None
        elif typed not in (None, "json"):
            target[key] = getattr(item, typed)
        else:
            try:
                target[key] = json.loads(text)
            except ValueError:
                target[key] = text


def _hydra_overrides(run_dir: Path) -> list[str] | None:
    import yaml

    file = run_dir / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in yaml.safe_load(file.read_text()) or []]
    except (OSError, yaml.YAMLError, TypeError):
        return None
