"""Teachers: the train-once cache (``cache``) and loading them from files, W&B or the cache
(``load``)."""

from __future__ import annotations

from typing import Callable

# Runs a config to completion in a run directory and returns its record (the runner's
# ``run_stage``, handed down by the caller: the cache sits below the code that runs stages).
TrainRun = Callable[..., dict]
