"""A throwaway git repository for tests of what depends on commit history (provenance of
results files, benchmark sections)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(root: Path, path: str, text: str) -> str:
    """Writes ``text`` to ``path`` (relative to ``root``), commits it; the new commit."""
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    git(root, "add", path)
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", path)
    return git(root, "rev-parse", "HEAD")
