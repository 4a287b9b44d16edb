"""Which process of a distributed run does what, asked of accelerate's `PartialState` in one place.

Under `accelerate launch` (or torchrun) a run is several processes: one per GPU, on one or several
machines. Only the main process (global rank 0) writes what a run writes once: the file log, the resolved
config, the attempts record, the artifacts, the manifest, the bucket sync. Each machine's main process
(local rank 0) owns that machine's run folder: the lock, `--overwrite`'s clearing, the folder itself
(the Trainer writes checkpoints on each machine's disk). The others wait at accelerate's barrier
(`local_main_process_first`) while the folder is prepared. A single process is its own main.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from accelerate import PartialState

from trainer.precision import DeviceInfo


@dataclass(frozen=True)
class Ranks:
    state: PartialState

    @classmethod
    def start(cls, device: DeviceInfo, timeout_s: int = 600) -> Ranks:
        """Joins the launcher's process group (gloo on CPUs, NCCL on GPUs); one process: no group.
        `timeout_s` bounds every collective: a machine that is gone (powered off before its processes
        could stop) fails the run on the others after that long, instead of leaving them waiting for it."""
        return cls(PartialState(cpu=not device.is_cuda, timeout=timedelta(seconds=timeout_s)))

    @property
    def main(self) -> bool:
        return self.state.is_main_process

    @property
    def local_main(self) -> bool:
        return self.state.is_local_main_process

    @property
    def world_size(self) -> int:
        return self.state.num_processes

    @property
    def machines(self) -> int:
        return max(1, self.world_size // self.per_machine)

    @property
    def per_machine(self) -> int:
        """Processes on each machine (torchrun's LOCAL_WORLD_SIZE; all of them when unset)."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))

    @contextmanager
    def local_main_first(self) -> Iterator[None]:
        """The block runs on each machine's main process first; the others enter it when it is done."""
        with self.state.local_main_process_first():
            yield

    def wait(self) -> None:
        self.state.wait_for_everyone()

    def gather(self, value: object) -> list[object]:
        """Every process's `value`, in rank order, on every process (one process: [value])."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values
