"""What goes to the VM: the project's files as git sees them, packed with `tarfile` (no tar, no git CLI).

One implementation for both ways the project reaches the VM: `make train MODE=cloud` streams the archive
over SSH (ops.vm), the playbook's trainer_host role unpacks the file `python -m ops pack` writes.
The files are git's tracked files plus the untracked ones git does not ignore (dulwich reads the index and
the ignore rules), so .venv, data, runs and the laptop's own .env stay home.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from trainer.errors import UserError

# Never shipped, whatever git says: the VM's .env is written by provisioning from the inventory.
NEVER_SHIPPED = {".env"}


def _repo(root: Path):
    from dulwich.errors import NotGitRepository
    from dulwich.repo import Repo

    try:
        return Repo(str(root))
    except NotGitRepository:
        raise UserError(
            f"{root} is not a git work tree: the cloud verbs ship git's files (git init && git commit)"
        ) from None


def project_files(root: Path) -> list[str]:
    """Tracked files that exist, plus untracked files that are not ignored, sorted, relative to root."""
    from dulwich import porcelain

    with _repo(root) as repo:
        tracked = [path.decode() for path in repo.open_index()]
        untracked = porcelain.status(repo, untracked_files="normal").untracked
    names = {*tracked, *(p.decode() if isinstance(p, bytes) else p for p in untracked)}
    return sorted(
        name
        for name in names
        if name not in NEVER_SHIPPED and ((root / name).is_file() or (root / name).is_symlink())
    )


def commit(root: Path) -> str:
    """The commit the VM will run: HEAD, with -dirty when the shipped tree differs from it."""
    from dulwich import porcelain

    with _repo(root) as repo:
        try:
            head = repo.head().decode()
        except KeyError:
            raise UserError(
                f"{root} has no commit yet: the run records the commit it trains (git add -A && git commit)"
            ) from None
        status = porcelain.status(repo, untracked_files="normal")
    changed = any(status.staged.values()) or status.unstaged or status.untracked
    return f"{head}-dirty" if changed else head


def _filtered(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # What lands on the VM belongs to its login user (the unpacking side chowns); no laptop ids or names.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(root: Path, out: IO[bytes]) -> int:
    """A gzip tar of project_files(root), written to the binary stream `out`."""
    names = project_files(root)
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            tar.add(root / name, arcname=name, recursive=False, filter=_filtered)
    return len(names)


def pack_tree(path: Path, out: IO[bytes]) -> int:
    """A gzip tar of a file or folder (a data file, a saved dataset or model folder), named by its
    basename."""
    count = 0
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for file in _walk(path):
            tar.add(file, arcname=file.relative_to(path.parent).as_posix(), recursive=False, filter=_filtered)
            count += 1
    return count


def _walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()  # os.walk visits them in this order
            for name in dirnames + sorted(filenames):
                yield Path(dirpath) / name


def write_archive(root: Path, dest: Path) -> int:
    """`python -m ops pack`: the project archive as a file (the playbook's unarchive reads it)."""
    scratch = dest.with_name(dest.name + ".part")
    with scratch.open("wb") as out:
        count = pack(root, out)
    scratch.replace(dest)
    return count
