"""ops/ship.py: what goes to the VM (git's files as git sees them, packed with tarfile) and the commit the
run records; the same packer for `make train MODE=cloud` and the playbook (`python -m ops pack`)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ops import ship
from tests.support import ROOT
from trainer.errors import UserError

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "project"
    (repo / "trainer").mkdir(parents=True)
    (repo / "trainer" / "a.py").write_text("A = 1\n")
    (repo / ".gitignore").write_text(".venv/\nruns/\n*.log\n")
    (repo / "README.md").write_text("hello\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_tracked_and_untracked_files_ship_ignored_ones_and_env_do_not(repo):
    (repo / ".venv").mkdir()
    (repo / ".venv" / "big").write_text("x")
    (repo / "runs").mkdir()
    (repo / "runs" / "model.bin").write_text("x")
    (repo / "debug.log").write_text("x")
    (repo / "new.py").write_text("NEW = 1\n")  # untracked, not ignored: ships (as `git status` shows it)
    (repo / ".env").write_text("COMPOSE_FILE=docker-compose.yml\n")  # the laptop's own: never
    (repo / "README.md").unlink()  # tracked but deleted: not shipped
    out = io.BytesIO()
    assert ship.pack(repo, out) == 3
    assert names(out.getvalue()) == [".gitignore", "new.py", "trainer/a.py"]


def test_files_keep_their_content_and_mode_and_lose_the_laptops_owner(repo):
    script = repo / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    out = io.BytesIO()
    ship.pack(repo, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        member = tar.getmember("run.sh")
        assert member.mode & 0o777 == 0o755 and (member.uid, member.gid, member.uname) == (0, 0, "")
        assert tar.extractfile(member).read() == b"#!/bin/sh\necho hi\n"


def test_the_commit_is_head_and_dirty_when_the_tree_differs(repo):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert ship.commit(repo) == head
    (repo / "trainer" / "a.py").write_text("A = 2\n")
    assert ship.commit(repo) == f"{head}-dirty"
    git(repo, "checkout", "--", "trainer/a.py")
    (repo / "untracked.py").write_text("")
    assert ship.commit(repo) == f"{head}-dirty"


def test_a_folder_without_git_or_without_a_commit_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a git work tree"):
        ship.commit(tmp_path)
    git(tmp_path, "init", "-q")
    with pytest.raises(UserError, match="no commit yet"):
        ship.commit(tmp_path)


def test_pack_tree_names_a_folder_by_its_basename(tmp_path):
    model = tmp_path / "deep" / "my-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "w.bin").write_bytes(b"\0" * 10)
    out = io.BytesIO()
    ship.pack_tree(model, out)
    assert names(out.getvalue()) == ["my-model", "my-model/config.json", "my-model/sub", "my-model/sub/w.bin"]


def test_python_m_ops_pack_writes_the_archive_the_playbook_unpacks(repo, tmp_path, laptop_env):
    out = tmp_path / "project.tar.gz"
    done = subprocess.run(
        [sys.executable, "-m", "ops", "pack", "--src", str(repo), "--out", str(out)],
        cwd=ROOT, env=laptop_env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert names(out.read_bytes()) == [".gitignore", "README.md", "trainer/a.py"]
    assert not list(tmp_path.glob("*.part"))
