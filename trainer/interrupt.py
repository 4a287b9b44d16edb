"""SIGTERM (docker stop, systemd, a spot VM's soft-off) behaves like Ctrl-C plus a checkpoint.

While the training loop runs, SIGTERM only asks for a stop: the step in progress ends, the Trainer saves a
checkpoint at that step (through its own save, so the completion marker and the bucket sync run as after
any save), and then the run stops with KeyboardInterrupt, which the CLI reports as Ctrl-C (one line,
exit 130). Outside the loop (loading data, the final evaluation) SIGTERM stops at once, as Ctrl-C does.

Why not transformers' `enable_jit_checkpoint`: it waits 3 s before acting, saves through
`_save_checkpoint` without the `on_save` callbacks (no completion marker, no bucket upload), and after a
mid-epoch stop the epoch-end evaluation and save still run, so the checkpoint records an evaluation an
uninterrupted run never makes (and the run then "finishes" normally).

In a distributed run every process hears SIGTERM on its own (docker/entrypoint.sh hands it to each of
the launcher's processes), maybe in different steps; the stop is agreed at each step end (an all-reduce
of the flag, MAX over the ranks), so all of them stop after the same step and save one complete
checkpoint together.

A stop mid-epoch saves without evaluating, so the resumed run evaluates exactly where an uninterrupted
one does; a stop at the last step of an epoch lets that epoch's evaluation and save happen first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class SigtermCheckpoint(TrainerCallback):
    """Put it last among the callbacks: its `on_save` stops the run after every other `on_save` ran."""

    def __init__(self) -> None:
        self.in_loop = False
        self.heard_at: float | None = None
        "time.monotonic() of the first SIGTERM this process heard while training"
        self.requested_at: float | None = None
        "when the stop was agreed (by every process of the run): from then on the run stops"

    def handle(self, signum, frame) -> None:
        if not self.in_loop:
            raise KeyboardInterrupt
        if self.heard_at is None:
            self.heard_at = time.monotonic()
            log.info("SIGTERM: saving a checkpoint after this step, then stopping")

    def _agree(self, args) -> None:
        """At a step end: the stop holds for every rank when any rank heard SIGTERM."""
        heard = self.heard_at is not None
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([int(heard)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            heard = bool(flag.item())
        if heard and self.requested_at is None:
            self.requested_at = self.heard_at or time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.in_loop = True

    def on_step_end(self, args, state, control, **kwargs):
        self._agree(args)
        if self.requested_at is not None:
            # Ends the epoch's loop; the save that follows (on_epoch_end) stops the run from on_save.
            # Not should_training_stop: the checkpoint records the control flags, and a resume restores
            # them (restore_callback_states_from_checkpoint), so the resumed run would stop at once.
            control.should_epoch_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.requested_at is not None and not float(state.epoch).is_integer():
            # Stopped mid-epoch: save, but do not evaluate or log where an uninterrupted run would not.
            control.should_evaluate = False
            control.should_log = False
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if self.requested_at is not None:
            log.info(
                "checkpoint-%d saved %.1f s after SIGTERM",
                state.global_step,
                time.monotonic() - self.requested_at,
            )
            raise KeyboardInterrupt

    def on_train_end(self, args, state, control, **kwargs):
        self._agree(args)  # a SIGTERM heard after the last step end
        self.in_loop = False
        if self.requested_at is not None:
            raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[SigtermCheckpoint]:
    """Route SIGTERM to a `SigtermCheckpoint` for the duration (main thread only: elsewhere Python cannot
    set signal handlers, and SIGTERM keeps its default)."""
    stopper = SigtermCheckpoint()
    if threading.current_thread() is not threading.main_thread():
        yield stopper
        return
    previous = signal.signal(signal.SIGTERM, stopper.handle)
    try:
        yield stopper
    finally:
        signal.signal(signal.SIGTERM, previous)
