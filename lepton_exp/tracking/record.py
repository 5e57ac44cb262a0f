"""The run record: ``summary.json`` in each run directory, what result tables are built from."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Iterator

from lepton_exp.config import RECORD_NAME

_LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "wandb",
              "torchmetrics", "timm", "transformers", "torch-pruning", "numpy", "scikit-learn",
              "lepton-exp")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Once per process: the jobs of an in-process sweep run the code imported by the first,
# whatever is committed while they run.
@functools.lru_cache(maxsize=None)
def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit of the lepton-exp checkout that ran (None when installed without git)."""
    where = str(path or Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    # dirty: the code differs from the commit; results/ (tables that runs and benchmarks
    # rewrite in a checkout) is what runs make, not what they ran
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":/",
                 ":(exclude,top)results") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """A handle whose content appears at ``path`` only when complete (temp file, fsync,
    rename): a crash never leaves a half-written file that a later reader trusts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False, **open_kwargs)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(handle.name)
        raise
    publish(Path(handle.name), path)


def publish(partial: Path, path: Path) -> Path:
    """Rename the complete file ``partial`` onto ``path`` (atomic), readable as any file this
    process creates (0o666 less the umask: 0644 with the usual 022). Every atomic writer ends
    here: temp files, and the files safetensors writes, are created private (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)
    os.replace(partial, path)
    return Path(path)


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write via a temp file + rename, so readers never see a half-written record."""
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
    return path


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RECORD_NAME).read_text())
