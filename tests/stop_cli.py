"""The lepton-exp command line, stopped by a signal sent to itself at a chosen point
(tests/test_stops.py): ``python tests/stop_cli.py <INT|TERM> <train|validate|test> <n> <args>``.

- ``train n``: in the training step of optimiser step ``n``, after its forward pass: the
  signal must wait for the step (backward, optimiser) to finish before the run stops;
- ``validate n``: at the second validation batch of epoch ``n`` (not the sanity check);
- ``test n``: at the second batch of test pass ``n`` (0: the last checkpoint's, 1: the best's).
"""

from __future__ import annotations

import os
import signal
import sys

from lepton_exp.cli import main
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.distill import DistillationModule

fired = False


def send(signum: int) -> None:
    global fired
    if not fired:
        fired = True
        os.kill(os.getpid(), signum)


def arm(signum: int, where: str, n: int) -> None:
    tests_seen = []
    if where == "train":
        for module in (ClassificationModule, DistillationModule):
            original = module.__dict__["training_step"]

            def training_step(self, batch, batch_idx, _original=original):
                loss = _original(self, batch, batch_idx)
                if self.global_step == n:
                    send(signum)  # now, between forward and backward
                return loss

            module.training_step = training_step
    elif where == "validate":
        original_validation = ClassificationModule.validation_step

        def validation_step(self, batch, batch_idx):
            if (not self.trainer.sanity_checking and self.current_epoch == n
                    and batch_idx == 1):
                send(signum)
            return original_validation(self, batch, batch_idx)

        ClassificationModule.validation_step = validation_step
    else:
        original_test = ClassificationModule.test_step

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0:
                tests_seen.append(self.test_prefix)
            if len(tests_seen) == n + 1 and batch_idx == 1:
                send(signum)
            return original_test(self, batch, batch_idx, dataloader_idx)

        ClassificationModule.test_step = test_step


if __name__ == "__main__":
    name, where, n, *args = sys.argv[1:]
    arm(getattr(signal, f"SIG{name}"), where, int(n))
    sys.argv = ["lepton-exp", *args]
    main()
