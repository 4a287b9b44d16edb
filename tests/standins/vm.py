"""The stand-in VM: Debian bookworm booting systemd as PID 1 in a container of the test's engine.

What is real: systemd (PID 1, units, timers, `systemctl poweroff`, poweroff.target on a soft-off),
Debian's OpenSSH server started by systemd, a login user with passwordless sudo, everything the
playbook installs over SSH (`make provision`), the run units and the idle timer, and the Docker engine
(the CI engine: its API is proxied to /run/docker.sock by the image's docker.service, so the trainer
containers are the engine's, as on the VM).

What stands in for GCP, and how (tests/standins/README.md has the whole list):
- the VM is a container on the host network; its sshd listens on an address of its own in 127.0.0.0/8
  (a free port on it), so nothing is configured on the CI machine itself;
- `soft_off(grace)` is GCE's ACPI soft-off: `docker stop` sends SIGRTMIN+4, systemd goes through
  poweroff.target (every unit's ExecStop), and `grace` seconds later the container is killed, as the
  power-off does (spot: 30 s, standard: 120 s); `boot()` after it is the VM starting again; a
  `systemctl poweroff` inside makes the container exit (code 130);
- its "disks" are a test folder bind-mounted at the same path inside and outside, so compose's bind
  mounts (which the engine resolves on the host) find the project and data folders; the VM's project
  folder and data mount are those paths, handed to the verbs through the inventory;
- no GPU and no kernel of its own: the playbook skips the steps that need them (one condition,
  `provision_has_kernel`, in ansible/site.yml).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOGIN_USER = "trainer"  # the module's default ssh_user
LOGIN_UID = 1000  # the image's default user too, so the container tests share the layer cache
IMAGE_DIR = Path(__file__).resolve().parent / "vm_image"
RUN_MANAGER = "/usr/local/sbin/trainer-run"  # where the role installs it (tasks/runs.yml)
SPOT_GRACE_S = 30  # GCE: ACPI soft-off to power-off, a spot VM
STANDARD_GRACE_S = 120  # a standard VM


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise RuntimeError(f"the stand-in VM needs the engine's unix socket, DOCKER_HOST is {host}")
    return host[len("unix://") :]


def compose_plugin() -> Path | None:
    for folder in (Path.home() / ".docker/cli-plugins", Path("/usr/local/lib/docker/cli-plugins"),
                   Path("/usr/libexec/docker/cli-plugins")):  # fmt: skip
        if (folder / "docker-compose").is_file():
            return (folder / "docker-compose").resolve()
    return None


def docker(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def cgroup_flags() -> list[str]:
    """systemd in a container on this engine. cgroup v1 (hybrid) hosts without CAP_SYS_RESOURCE refuse
    --privileged ("unable to apply caps"); every capability but that one, the host's cgroup namespace
    and /sys/fs/cgroup read-write boot it. A cgroup v2 host: a private cgroup namespace instead."""
    flags = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "apparmor=unconfined"]
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # the unified hierarchy
        return [*flags, "--cgroupns=private"]
    return [*flags, "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]


def build_vm_image(rootfs_tar: str) -> str:
    """The stand-in's system disk image from the debootstrap'd root, tagged by its inputs."""
    inputs = hashlib.sha256(rootfs_tar.encode() + str(os.stat(rootfs_tar).st_mtime_ns).encode())
    for path in sorted(IMAGE_DIR.iterdir()):
        inputs.update(path.name.encode() + path.read_bytes())
    digest = inputs.hexdigest()[:12]
    tag = f"trainer-standin-vm:{digest}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    base = f"trainer-standin-rootfs:{digest}"
    docker("import", rootfs_tar, base, timeout=900)
    docker("build", "--network", "host", "-q", "--build-arg", f"BASE_IMAGE={base}",
           "--build-arg", f"LOGIN_USER={LOGIN_USER}", "--build-arg", f"LOGIN_UID={LOGIN_UID}",
           "-t", tag, str(IMAGE_DIR), timeout=1200)  # fmt: skip
    docker("image", "rm", base, check=False)
    return tag


def free_port_on(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def ssh_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@dataclass
class Laptop:
    """The user's side: an SSH key pair and a known_hosts file of its own."""

    home: Path
    key: Path = field(init=False)
    known_hosts: Path = field(init=False)

    def __post_init__(self) -> None:
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True)
        self.key = self.home / ".ssh" / "id_ed25519"
        self.known_hosts = self.home / ".ssh" / "known_hosts"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f", str(self.key)],
                       check=True)  # fmt: skip


@dataclass
class StandInVM:
    """One booted stand-in VM (see the module docstring). `root` is its disk, at the same path inside."""

    root: Path
    image: str
    laptop: Laptop
    address: str
    port: int = 0
    shared: Path | None = None  # a folder every VM of a deployment mounts at the same path (files the
    # playbook reads from "the VM's disk" on each of several nodes)
    name: str = field(init=False)
    boot_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = self.port or free_port_on(self.address)
        self.name = f"trainer-standin-{os.getpid()}-{self.address.replace('.', '-')}-{self.port}"
        self.sshd_dir = self.root.parent / f"sshd-{self.address}-{self.port}"

    @property
    def project_dir(self) -> Path:
        return self.root / "opt" / "trainer"

    @property
    def data_mount(self) -> Path:
        return self.root / "mnt" / "trainer-data"

    def _sshd_config(self) -> None:
        self.sshd_dir.mkdir(parents=True, exist_ok=True)
        host_key = self.sshd_dir / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        (self.sshd_dir / "authorized_keys").write_text(Path(f"{self.laptop.key}.pub").read_text())
        (self.sshd_dir / "sshd_config").write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            "HostKey /etc/ssh/standin/ssh_host_ed25519_key\n"
            "AuthorizedKeysFile /etc/ssh/standin/authorized_keys\n"
            f"AllowUsers {LOGIN_USER}\n"
            "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nLogLevel VERBOSE\n"
        )
        host_pub = Path(f"{host_key}.pub").read_text().split()
        # The host key the laptop expects, as a first login records it.
        with self.laptop.known_hosts.open("a") as f:
            f.write(f"[{self.address}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def create(self) -> None:
        """Make the machine and boot it: systemd as PID 1, the engine's socket mounted, the disk folder
        at the same path inside."""
        self._sshd_config()
        for folder in (self.project_dir, self.data_mount, self.root / "etc"):
            folder.mkdir(parents=True, exist_ok=True)
        docker("run", "-d", "--name", self.name, "--hostname", "stand-in-vm", "--network", "host",
               "--add-host", "stand-in-vm:127.0.1.1",
               "--label", "trainer.standin-vm=1", *cgroup_flags(),
               "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-timeout", str(STANDARD_GRACE_S + 10),
               "-v", f"{docker_socket()}:/run/host-docker.sock",
               "-v", f"{self.sshd_dir}:/etc/ssh/standin:ro",
               "-v", f"{self.root}:{self.root}",
               *(["-v", f"{self.shared}:{self.shared}"] if self.shared else []),
               self.image)  # fmt: skip
        self._wait_booted()

    def _wait_booted(self, seconds: float = 60) -> None:
        started = time.monotonic()
        deadline = started + seconds
        while not ssh_answers(self.address, self.port):
            if not self.running():
                raise RuntimeError(f"the stand-in VM exited while booting:\n{self.journal()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in's sshd did not answer within {seconds:.0f} s:\n"
                                   f"{self.journal()[-3000:]}")  # fmt: skip
            time.sleep(0.05)
        self.boot_seconds.append(time.monotonic() - started)

    def boot(self) -> None:
        """Start the stopped machine again (GCE's `instances start`): systemd boots, enabled units start."""
        docker("start", self.name)
        self._wait_booted()

    def soft_off(self, grace: float = SPOT_GRACE_S) -> tuple[float, int]:
        """GCE's stop or preemption: ACPI soft-off, then power-off after `grace` seconds. Returns the
        seconds until the machine was off and its exit code (a clean poweroff: 130; killed: 137)."""
        started = time.monotonic()
        docker("stop", "-t", str(int(grace)), self.name, timeout=int(grace) + 60)
        return time.monotonic() - started, self.exit_code()

    def running(self) -> bool:
        done = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def wait_off(self, seconds: float) -> float:
        """Wait until the machine powered itself off; the seconds it took."""
        started = time.monotonic()
        while self.running():
            if time.monotonic() - started > seconds:
                raise AssertionError(f"the stand-in VM still runs after {seconds:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - started

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def console(self, *command: str, check: bool = True) -> str:
        """A command run as root on the VM's console (docker exec): the test's own look, no SSH session."""
        done = docker("exec", self.name, *command, check=check)
        return done.stdout

    def journal(self, *args: str) -> str:
        if not self.running():
            return "(the VM is off)"
        return docker("exec", self.name, "journalctl", "--no-pager", "-q", "-o", "short-monotonic", *args,
                      check=False).stdout  # fmt: skip

    def system_state(self) -> str:
        """`systemctl is-system-running --wait`: running, degraded (a unit failed), ..."""
        done = docker("exec", self.name, "systemctl", "is-system-running", "--wait", check=False, timeout=120)
        return done.stdout.strip()

    def failed_units(self) -> str:
        return self.console("systemctl", "list-units", "--failed", "--no-legend", "--plain", check=False)

    def sessions(self) -> int:
        """SSH logins so far (sshd's journal): 'nothing was started on the VM' means none were added."""
        return self.journal("-u", "ssh.service").count(f"Accepted publickey for {LOGIN_USER}")

    def ssh(self, command: str, stdin: bytes | None = None, timeout: int = 900):
        return subprocess.run(
            ["ssh", "-i", str(self.laptop.key), "-p", str(self.port), "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={self.laptop.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", f"{LOGIN_USER}@{self.address}", command],
            input=stdin, capture_output=True, timeout=timeout,
        )  # fmt: skip

    def must(self, command: str, stdin: bytes | None = None, timeout: int = 900) -> str:
        done = self.ssh(command, stdin, timeout)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"on the stand-in VM, `{command[:80]}` failed:\n{out[-3000:]}")
        return done.stdout.decode()


def make_vm(
    folder: Path, laptop: Laptop, address: str, port: int = 0, shared: Path | None = None
) -> StandInVM:
    """A stand-in VM (not yet booted) from the CI's bookworm root (TRAINER_TEST_ROOTFS_TAR)."""
    rootfs = os.environ["TRAINER_TEST_ROOTFS_TAR"]
    if not shutil.which("docker"):
        raise RuntimeError("the docker CLI is needed on the host")
    return StandInVM(folder, build_vm_image(rootfs), laptop, address, port, shared)
