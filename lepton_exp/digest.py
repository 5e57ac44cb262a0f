"""Short content hashes: run-directory suffixes, cache keys, sweep directories, W&B groups."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def short_hash(value: Any, length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` (a string as it is; anything
    else as sorted JSON, so equal dicts hash equally whatever their key order)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
