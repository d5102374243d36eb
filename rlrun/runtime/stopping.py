"""Stopping a run cleanly on a signal: SIGTERM (``kill``, SLURM at the time limit or on preemption),
SIGUSR1 (SLURM's advance warning, ``--signal=USR1@90``) and SIGINT (Ctrl-C).

The first signal only sets a flag and prints one line; the loop finishes the step it is in, every
rank agrees to stop after that same step (:meth:`Stop.agreed`, one all-reduce per step), a checkpoint
is written, the loggers are closed (W&B flushed) and the process exits with 128 + the signal's number
(130 for Ctrl-C) after one line saying where the checkpoint is and how to continue. A second signal
while that happens exits at once (``os._exit``): the checkpoint being written sits in a staging
directory (``rlrun.runtime.checkpoint``), so the last complete one is never damaged.
"""
from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def exit_before_training(signum: int, frame) -> None:
    """SIGTERM or SIGUSR1 from the start of ``rlrun`` until the loop takes the signals over (imports,
    the model, a checkpoint being read): nothing was trained since the last checkpoint, so the
    process says so in one line and exits with 128 + the signal's number at once. SLURM's warning
    coming during a (re)queued job's start-up thus still ends in exit 138, which
    scripts/slurm/train.sbatch requeues; the default action would kill the process without a word."""
    print(f"rlrun: {signal.Signals(signum).name} before training started: exiting; nothing to save "
          "(the last checkpoint, if any, is intact)", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def exit_early_on_signals() -> None:
    """Install :func:`exit_before_training` for SIGTERM and SIGUSR1 (SIGINT keeps Python's
    KeyboardInterrupt, which ``rlrun``'s entry point turns into one line)."""
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, exit_before_training)


class Stopped(Exception):
    """Raised by the loop after the checkpoint of a signalled stop; ``code`` is the exit status."""

    def __init__(self, signum: int, message: str, said: bool = False):
        super().__init__(message)
        self.code, self.said = 128 + signum, said  # said: the line is already printed


class Stop:
    """The signal flag of this process (install with :meth:`install`, undo with :meth:`uninstall`)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "Stop":
        import threading

        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def pass_on(self, signum: int) -> None:
        """Call the handler that was there before :meth:`install` for ``signum``, when it is a Python
        function: under submitit (``hydra/launcher=slurm``) SIGUSR1's requeues the job, so the
        requeued job resumes (``resume=auto``) from the checkpoint just written."""
        if self.passes_on(signum):
            self._previous[signum](signum, None)

    def passes_on(self, signum: int) -> bool:
        previous = self._previous.get(signum)
        return callable(previous) and previous not in (signal.default_int_handler, exit_before_training)

    def _handle(self, signum: int, frame) -> None:
        from rlrun.runtime import dist

        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"rlrun: {name} again: exiting now; the last complete checkpoint is intact",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        if dist.is_main():
            print(f"rlrun: {name}: stopping after this step and writing a checkpoint (again to exit at once)",
                  file=sys.stderr, flush=True)

    def agreed(self) -> int | None:
        """The signal that stops every rank after this step, or None (a collective: call on all ranks)."""
        import torch

        from rlrun.runtime import dist

        if dist.world_size() == 1:
            return self.signum
        got = int(dist.all_reduce_max(torch.tensor([float(self.signum or 0)]))[0])
        return got or None
