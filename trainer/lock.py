"""One output folder, one run at a time: an exclusive `flock` on the run folder itself.

The lock is on the folder's own directory entry, not on a file inside it, so taking it writes nothing:
a folder stays empty-checkable and a run that fails before it writes leaves nothing behind. The kernel
drops the lock when its process ends, however it ends (kill -9 included): no stale pid file to delete.
In a multi-process run only each machine's main process takes it (LOCAL_RANK, set by accelerate and
torchrun, is 0 there or unset).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from trainer.errors import UserError


def is_local_main() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0"


class RunLock:
    """`with RunLock(folder) as lock: ... lock.acquire()`: holds the folder (it must exist by then) for
    one run until the block ends; a second run's `acquire` raises a UserError."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None
        self.held = False

    def __enter__(self) -> RunLock:
        return self

    def acquire(self) -> None:
        if not is_local_main():
            self.held = True
            return
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(
                    f"output folder {self.folder} is in use by another training run: wait for it to end "
                    "(or stop it), or choose another --output-dir"
                ) from None
            raise UserError(
                f"cannot lock output folder {self.folder} ({exc.strerror}): choose another --output-dir"
            ) from None
        self._fd = fd
        self.held = True

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
        self.held = False
