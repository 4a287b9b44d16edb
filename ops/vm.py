"""The VM session: ssh argument lists (never a shell line built from values), and what goes across.

Every remote command is a list of words, quoted for the remote shell by shlex.join; where a command needs
the shell (`&&`, redirections), the script is a constant and the values are its positional arguments
(`sh -c SCRIPT sh VALUE...`). Copies go over ssh as gzip tar streams made by ops.ship (tarfile): nothing
beyond ssh is needed here, GNU tar unpacks them on the VM. What lands on the data disk belongs to the login
user, whose ids the image's user has (the .env that provisioning writes), so the trainer can read files
whatever their mode here (safetensors: 0600).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ops import ship
from ops.inventory import Connection
from trainer.errors import UserError

# The run manager the trainer_host role installs on the VM (ansible/roles/trainer_host/files/trainer-run).
RUN_MANAGER = "/usr/local/sbin/trainer-run"
UNREACHABLE = 255  # ssh's own exit status for a connection that failed

# Unpack a tar stream into DEST, replacing DEST/NAME, owned by USER: sh -c SCRIPT sh DEST NAME USER.
_UNPACK = (
    'set -e; mkdir -p "$1"; rm -rf "${1:?}/${2:?}"; '
    'tar -C "$1" -xzf - --no-same-owner; chown -R "$3:" "$1/$2"'
)
# Replace the project folder whole (deleted files go too), keeping provisioning's .env:
# sh -c SCRIPT sh DIR USER.
_REPLACE_PROJECT = (
    'set -e; new="$1.incoming"; old="$1.previous"; rm -rf "$new" "$old"; mkdir -p "$new"; '
    'tar -C "$new" -xzf - --no-same-owner; if [ -f "$1/.env" ]; then cp -p "$1/.env" "$new/.env"; fi; '
    'chown -R "$2:" "$new"; if [ -e "$1" ]; then mv "$1" "$old"; fi; mv "$new" "$1"; rm -rf "$old"'
)
# Ready (exit 1 if not): sudo, Docker, provisioning's .env and the run manager; then (exit 3 if not) the .env
# is this node's: provisioned for the inventory's node count and this node's rank.
_PROBE = (
    'sudo -n docker info --format ok >/dev/null && test -f "$1/.env" && test -x "$2" || exit 1; '
    'sudo -n grep -qx "TRAINER_NUM_MACHINES=$3" "$1/.env" && sudo -n grep -qx "TRAINER_MACHINE_RANK=$4" '
    '"$1/.env" || exit 3'
)


class Session:
    """ssh to one node of the inventory (node 0 unless told), as its login user, with the user's key."""

    def __init__(self, conn: Connection, known_hosts: str | None = None):
        self.conn = conn
        self.options = [
            "-i", str(conn.key), "-p", str(conn.port), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
        ]  # fmt: skip
        if known_hosts:
            self.options += ["-o", f"UserKnownHostsFile={known_hosts}"]

    def argv(self, words: Sequence[str] = (), tty: bool = False) -> list[str]:
        login = f"{self.conn.user}@{self.conn.host}"
        command = [shlex.join(words)] if words else []
        return ["ssh", *self.options, *(["-t"] if tty else []), login, *command]

    def run(
        self, *words: str, capture: bool = False, stdin=subprocess.DEVNULL, feed: str | None = None
    ) -> subprocess.CompletedProcess:
        """`feed`: text for the remote command's standard input (values that must not be on a command
        line); else `stdin`."""
        if feed is not None:
            return subprocess.run(
                self.argv(words), input=feed, capture_output=capture, text=True, check=False
            )
        return subprocess.run(self.argv(words), stdin=stdin, capture_output=capture, text=True, check=False)

    def script(self, script: str, *values: str, capture: bool = False, stdin=subprocess.DEVNULL):
        """A constant shell script run by the VM's sh, the values as its arguments $1, $2, ..."""
        return self.run("sh", "-c", script, "sh", *values, capture=capture, stdin=stdin)

    def manager(
        self, *words: str, capture: bool = False, feed: str | None = None
    ) -> subprocess.CompletedProcess:
        return self.run("sudo", RUN_MANAGER, *words, capture=capture, feed=feed)

    def interactive(self, words: Sequence[str]) -> None:
        """Replace this process with ssh (make ssh): the terminal is the user's."""
        os.execvp("ssh", self.argv(words))

    @property
    def label(self) -> str:
        """How messages name this machine: the VM, or node K of several."""
        return "the VM" if self.conn.nodes == 1 else f"node {self.conn.rank}"

    def probe(self) -> None:
        """Before anything is copied or started: the VM answers over SSH, sudo and Docker work there, and
        provisioning has run for this node (the compose settings it writes exist, with the inventory's node
        count and this node's rank)."""
        conn = self.conn
        where = f"{conn.user}@{conn.host} port {conn.port}"
        done = self.script(
            _PROBE, conn.project_dir, RUN_MANAGER, str(conn.nodes), str(conn.rank), capture=True
        )
        if done.returncode == UNREACHABLE:
            last = (done.stderr.strip().splitlines() or ["no answer"])[-1]
            raise UserError(
                f"cannot reach {self.label} over SSH at {where} ({last}): is it running? (make infra-apply "
                "starts a stopped VM and writes its new address)"
            )
        if done.returncode == 3:
            raise UserError(
                f"{self.label} at {where} was provisioned for another node count or rank than the "
                f"inventory's {conn.nodes} node(s): run make provision"
            )
        if done.returncode != 0:
            raise UserError(
                f"{self.label} at {where} is not ready (no sudo, Docker, {conn.project_dir}/.env or "
                f"{RUN_MANAGER}): run make provision"
            )

    def _stream(self, words: Sequence[str], write) -> None:
        """Run `words` on the VM with what `write(stream)` writes as its standard input."""
        with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty remote cannot block the copy
            proc = subprocess.Popen(
                self.argv(words), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
            )
            assert proc.stdin is not None
            try:
                write(proc.stdin)
                proc.stdin.close()
            except BrokenPipeError:  # the remote side ended early: its exit status and message say why
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            code = proc.wait()
            errors.seek(0)
            detail = (errors.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        if code != 0:
            raise UserError(f"copying to {self.conn.host} failed (ssh exit {code}: {detail})")

    def push(self, path: Path, dest: str) -> None:
        """path (a file or folder) -> DEST/<its name> on the VM, replacing what was there."""
        script = ["sudo", "sh", "-c", _UNPACK, "sh", dest, path.name, self.conn.user]
        self._stream(script, lambda out: ship.pack_tree(path, out))

    def push_project(self, root: Path) -> None:
        """The project as ops.ship packs it, replacing the VM's copy whole; provisioning's .env stays."""
        script = ["sudo", "sh", "-c", _REPLACE_PROJECT, "sh", self.conn.project_dir, self.conn.user]
        self._stream(script, lambda out: ship.pack(root, out))

    def pull(self, remote_dir: str, dest: Path) -> None:
        """remote_dir's contents -> dest (a new folder), through a scratch folder: nothing half-written."""
        proc = subprocess.Popen(
            self.argv(["sudo", "tar", "-C", remote_dir, "-cf", "-", "."]), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        scratch = dest.with_name(f".{dest.name}.fetch")
        try:
            scratch.mkdir(parents=True, exist_ok=False)
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(scratch, filter="data")
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if proc.wait() != 0:
                raise UserError(
                    f"no run folder {remote_dir} on the VM ({(err.strip().splitlines() or ['?'])[-1]})"
                )
            if dest.exists():
                dest.rmdir()
            scratch.rename(dest)
        except tarfile.ReadError:
            proc.wait()
            raise UserError(f"no run folder {remote_dir} on the VM's data disk") from None
        finally:
            if scratch.exists():
                import shutil

                shutil.rmtree(scratch, ignore_errors=True)
