"""Errors a user can fix, and how they are shown: one line that says what to change.

The bottom of the package: it imports nothing of lepton_exp, so every layer can raise these.
"""

from __future__ import annotations

import difflib
import signal
from typing import Iterable


class LeptonError(Exception):
    """An error the user can fix; shown as one line (stack trace with HYDRA_FULL_ERROR=1)."""


class ConfigError(LeptonError):
    """A setting that cannot work: the message names the key and the fix."""


class Stopped(KeyboardInterrupt):
    """The run was told to stop: Ctrl-C (SIGINT) or SIGTERM (a cluster's pre-emption, `kill`).

    A KeyboardInterrupt, so everything that handles Ctrl-C handles both. ``mid_step``: raised
    inside a training step (a second Ctrl-C), where the weights may be half updated."""

    def __init__(self, signum: int = signal.SIGINT, mid_step: bool = False) -> None:
        self.signum = int(signum)
        self.mid_step = mid_step
        super().__init__(self.source)

    @property
    def source(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process killed by the signal: 130, 143."""
        return 128 + self.signum


def one_line(error: BaseException) -> str:
    """An exception's message with its whitespace (line breaks included) folded."""
    return " ".join(str(error).split()) or type(error).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
