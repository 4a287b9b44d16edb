"""The stand-in VM of the cloud verbs' tests: a machine that is real in every part it can be.

What is real: Debian bookworm with Debian's OpenSSH server (its own host key and config, started by
the test), a login user with passwordless sudo, the Docker engine CI runs (its socket, the host's
Docker CLI and compose plugin bind-mounted), the trainer image built there by compose from the
shipped project, and everything `make train MODE=cloud` does over SSH.

What stands in for GCP, and how:
- the VM is a Docker container on the host network, its sshd listening on an address of its own in
  127.0.0.0/8 (a free port on it): nothing is configured on the CI machine itself;
- its "disks" are a test folder bind-mounted at the same path inside and outside, so compose's bind
  mounts (which the engine resolves on the host) find the project and data folders; the VM's project
  folder and data mount are therefore that folder's paths, handed to the cloud verbs through the
  inventory (TRAINER_VM_PROJECT_DIR / TRAINER_VM_DATA_MOUNT at `make inventory`);
- provisioning is done as the trainer_host role does it (data folders, the project shipped as git
  sees it, the compose .env rendered from the role's own template, the image built by compose), over
  SSH, because the playbook keeps its chroot target;
- no GPU: compose runs with the CPU override and host networking (the CI engine has no bridge), and
  the trainer reaches the GCS emulator through the least-privilege gate (STORAGE_EMULATOR_HOST) in
  place of the metadata server's service-account token and storage.googleapis.com.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from tests.support import ROOT

LOGIN_USER = "trainer"  # the module's default ssh_user
LOGIN_UID = 1000  # the image's default user too, so the container tests share the layer cache
STANDIN_DIR = Path(__file__).resolve().parent / "standin"
ROLE = ROOT / "ansible" / "roles" / "trainer_host"
ENV_TEMPLATE = ROLE / "templates" / "env.j2"
RUN_MANAGER = "/usr/local/sbin/trainer-run"  # where the role installs it (tasks/runs.yml)


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


def build_standin_image(base_image: str) -> str:
    """The stand-in's system image, tagged by its inputs (the layer cache makes a rebuild instant)."""
    digest = hashlib.sha256((STANDIN_DIR / "Dockerfile").read_bytes() + base_image.encode()).hexdigest()[:12]
    tag = f"trainer-standin-vm:{digest}"
    if docker("image", "inspect", tag, check=False).returncode != 0:
        docker("build", "--network", "host", "-q", "--build-arg", f"BASE_IMAGE={base_image}",
               "--build-arg", f"LOGIN_USER={LOGIN_USER}", "--build-arg", f"LOGIN_UID={LOGIN_UID}",
               "-t", tag, str(STANDIN_DIR), timeout=900)  # fmt: skip
    return tag


def free_port_on(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for_ssh(address: str, port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the stand-in's sshd did not answer on {address}:{port} within {seconds:.0f} s")


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
    """One stand-in VM (see the module docstring). `root` is its disk, at the same path inside."""

    root: Path
    image: str
    laptop: Laptop
    address: str
    port: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port_on(self.address)
        self.name = f"trainer-standin-{os.getpid()}-{self.port}"
        self.sshd_dir = self.root.parent / "sshd"

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
            "UsePAM no\nPidFile /run/sshd.pid\nLogLevel VERBOSE\n"
        )
        host_pub = Path(f"{host_key}.pub").read_text().split()
        with self.laptop.known_hosts.open(
            "a"
        ) as f:  # the host key the laptop expects, as a first login records it
            f.write(f"[{self.address}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def start(self) -> None:
        """Boot the machine: a container running only sshd, the engine's socket and CLI mounted."""
        self._sshd_config()
        for folder in (self.root / "opt", self.root / "mnt", self.root / "etc"):
            folder.mkdir(parents=True, exist_ok=True)
        cli = shutil.which("docker")
        plugin = compose_plugin()
        if not cli or not plugin:
            raise RuntimeError("the docker CLI and its compose plugin are needed on the host")
        docker("run", "-d", "--name", self.name, "--network", "host", "--label", "trainer.standin-vm=1",
               "-v", f"{docker_socket()}:/var/run/docker.sock",
               "-v", f"{Path(cli).resolve()}:/usr/local/bin/docker:ro",
               "-v", f"{plugin}:/usr/local/lib/docker/cli-plugins/docker-compose:ro",
               "-v", f"{self.sshd_dir}:/etc/ssh/standin:ro",
               "-v", f"{self.root}:{self.root}",
               self.image)  # fmt: skip
        wait_for_ssh(self.address, self.port)

    def stop(self) -> None:
        """As a stopped VM: the machine is off, its disk kept."""
        docker("stop", "-t", "5", self.name)

    def resume(self) -> None:
        docker("start", self.name)
        wait_for_ssh(self.address, self.port)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def sessions(self) -> int:
        """SSH logins so far (sshd's own log): 'nothing was started on the VM' means none were added."""
        done = docker("logs", self.name, check=False)
        return (done.stdout + done.stderr).count(f"Accepted publickey for {LOGIN_USER}")

    def ssh(
        self, command: str, stdin: bytes | None = None, timeout: int = 900
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", str(self.laptop.key), "-p", str(self.port), "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={self.laptop.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             f"{LOGIN_USER}@{self.address}", command],
            input=stdin, capture_output=True, timeout=timeout,
        )  # fmt: skip

    def must(self, command: str, stdin: bytes | None = None, timeout: int = 900) -> str:
        done = self.ssh(command, stdin, timeout)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"on the stand-in VM, `{command[:80]}` failed:\n{out[-3000:]}")
        return done.stdout.decode()

    def provision(self, repo: Path, bucket_url: str, settings: dict[str, str], overrides: str) -> None:
        """What the trainer_host role does on a real VM, done over SSH: data folders owned by the login
        user, the project as git sees it, the compose .env from the role's template (plus the
        stand-in's `settings`), and the image built by compose. `overrides` is the stand-in's compose
        file (CPU, host network, the gate), kept outside the project as a VM's own config would be."""
        owner = f"{LOGIN_USER}:{LOGIN_USER}"
        folders = " ".join(str(self.data_mount / name) for name in ("data", "runs", "models"))
        self.must(f"sudo install -d -o {LOGIN_USER} -g {LOGIN_USER} -m 0775 {folders} {self.project_dir}")
        listing = ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        files = subprocess.run(listing, capture_output=True, check=True).stdout
        pack = ["tar", "-C", str(repo), "--null", "--files-from=-", "--ignore-failed-read", "-czf", "-"]
        archive = subprocess.run(pack, input=files, capture_output=True, check=True).stdout
        unpack = f"sudo tar -C {self.project_dir} -xzf - --no-same-owner"
        self.must(f"{unpack} && sudo chown -R {owner} {self.project_dir}", stdin=archive)
        override_file = self.root / "etc" / "trainer-standin-compose.yml"
        override_file.write_text(overrides)
        env = render_env(self, bucket_url) + "".join(f"{k}={v}\n" for k, v in settings.items())
        env += f"COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml:{override_file}\n"
        self.must(f"cat > {self.project_dir}/.env", stdin=env.encode())
        build = "sudo env DOCKER_BUILDKIT=0 COMPOSE_BAKE=false docker compose build -q trainer"
        self.must(f"cd {self.project_dir} && {build}", timeout=1800)
        self.install_run_manager()

    @property
    def idle_stop_mark(self) -> Path:
        """What the stand-in's idle stop command writes: a real VM would power off instead."""
        return self.root / "idle-stop-called"

    def install_run_manager(self) -> None:
        """As the role's tasks/runs.yml does: the run manager, its settings from the role's template (the
        stop command a file the test can see: a shutdown is out of reach here) and the jobs folder. The
        systemd units are not installed: the stand-in has no systemd (trainer-run starts `exec` in a
        session of its own there; the units are checked with systemd-analyze verify)."""
        self.must(f"sudo tee {RUN_MANAGER} >/dev/null && sudo chmod 0755 {RUN_MANAGER}",
                  stdin=(ROLE / "files" / "trainer-run").read_bytes())  # fmt: skip
        conf = render_role_template(
            "trainer-run.conf.j2",
            trainer_host_project_dir=str(self.project_dir),
            trainer_host_data_mount=str(self.data_mount),
            trainer_host_idle_stop_minutes=10,
            trainer_host_idle_stop_command=f"touch {self.idle_stop_mark}",
        )
        self.must("sudo tee /etc/default/trainer-run >/dev/null", stdin=conf.encode())
        self.must(f"sudo install -d -m 0755 {self.data_mount / 'jobs'}")


def render_role_template(name: str, **variables) -> str:
    """One of the trainer_host role's templates, rendered as Ansible would (StrictUndefined; Ansible's
    `quote` filter is shlex.quote)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["quote"] = shlex.quote
    return env.from_string((ROLE / "templates" / name).read_text()).render(**variables)


def render_env(vm: StandInVM, bucket_url: str) -> str:
    """The compose .env exactly as the trainer_host role's template writes it (StrictUndefined: a
    variable the template gains and the stand-in lacks fails here, not silently)."""
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        ENV_TEMPLATE.read_text()
    )
    return template.render(
        trainer_host_project_dir=str(vm.project_dir),
        trainer_host_data_mount=str(vm.data_mount),
        trainer_host_gpu_count=1,
        trainer_host_bucket_url=bucket_url,
        trainer_host_mode="cloud",
        trainer_host_hourly_cost_usd=0.5655,
        trainer_host_image="tweet-trainer:standin-vm",  # one tag: a rerun reuses its layers
        trainer_host_owner=LOGIN_USER,
        ansible_facts={"getent_passwd": {LOGIN_USER: ["x", str(LOGIN_UID), str(LOGIN_UID), "", "", ""]}},
    )
