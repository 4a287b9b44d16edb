"""Fixtures for the cloud tests: the GCS API emulator on loopback, and the least-privilege gate."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import require


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator (a real GCS JSON API server, in memory) on a free loopback port: its URL."""
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    require(exe.exists(), "gcp-storage-emulator is not installed: run `make setup`")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, "gcp-storage-emulator")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def emulator_client(url: str):
    """A google-cloud-storage client of the GCS API at `url` (the emulator: the project's owner's view;
    the gate: the VM's account's view)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


# The stand-in google provider for real Terraform, the same session fixture the infra tests use.
from tests.infra.conftest import stand_in_google  # noqa: E402, F401


@pytest.fixture(scope="session")
def cloud(tmp_path_factory, gcs_emulator, stand_in_google, no_gnu):  # noqa: F811 (the fixture imported above)
    """The stand-in deployment (tests/standins/deployment.py), once a session: `make infra-apply` (real
    Terraform, the stand-in provider giving the instance the booted VM's address) writes the inventory,
    then `make provision` runs the real playbook over SSH. Its timings go to .ci-cache."""
    with deploy(tmp_path_factory.mktemp("cloud"), gcs_emulator, stand_in_google, no_gnu) as cloud:
        yield cloud


@contextlib.contextmanager
def deploy(tmp: Path, gcs_emulator: str, stand_in_google, no_gnu, nodes: int = 1):  # noqa: F811
    """`make infra-up` of the stand-in deployment in `tmp`: `nodes` booted VMs (node_count), each at an
    address of its own, node 0's also its internal one (where the others meet it)."""
    import json
    import os
    import shutil
    from contextlib import ExitStack

    from tests.standins.deployment import INSTANCE, Deployment, adc_file, commit, copy_repo, tools_path
    from tests.standins.gcs_gate import Gate, Policy
    from tests.standins.google_provider.cloud import CLOUD_ENV, StandInCloud
    from tests.standins.portability import laptop_path
    from tests.standins.vm import Laptop, free_port_on, make_vm
    from tests.support import ROOT

    for tool_name in ("ssh", "ssh-keygen", "docker", "make", "git"):
        require(shutil.which(tool_name), f"`{tool_name}` is not installed (.ci/apt-packages.txt)")
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True
    )
    require(info.returncode == 0, "no Docker engine answers at DOCKER_HOST (.ci/services.d/10-docker.sh)")
    for name, made_by in (("TRAINER_TEST_BASE_IMAGE", ".ci/build-base-image.sh"),
                          ("TRAINER_TEST_ROOTFS_TAR", ".ci/bookworm-rootfs.sh")):  # fmt: skip
        require(os.environ.get(name), f"{name} is not set ({made_by}, as .ci/run does)")
    no_gnu_bin, _ = no_gnu
    timings: dict[str, float] = {}
    started = time.monotonic()
    repo = tmp / "repo"
    repo.mkdir()
    copy_repo(repo)
    laptop = Laptop(tmp / "laptop")
    pid = os.getpid()
    # Node k at 127.(77+k).x.y, every one on the same free SSH port (SSH_PORT is one for all nodes).
    addresses = [f"127.{77 + k}.{pid // 250 % 250}.{pid % 250 + 1}" for k in range(nodes)]
    port = free_port_on(addresses[0])
    shared = tmp / "shared" if nodes > 1 else None
    vms = [make_vm(tmp / (f"vm{k}" if nodes > 1 else "vm"), laptop, address, port, shared)
           for k, address in enumerate(addresses)]  # fmt: skip
    vm = vms[0]
    timings["standin_image_s"] = time.monotonic() - started

    # Terraform's half of `make infra-up`, for real, with the stand-in google provider.
    env = {**stand_in_google.env(repo / "infra"), CLOUD_ENV: str(tmp / "stand-in-cloud.json")}
    tfvars = (
        'project_id = "stand-in-project"\nssh_source_ranges = ["127.0.0.1/32"]\n'
        f'ssh_public_key_path = "{laptop.key}.pub"\n'
    )
    layout = {"TRAINER_VM_PROJECT_DIR": str(vm.project_dir), "TRAINER_VM_DATA_MOUNT": str(vm.data_mount)}
    if nodes == 1:
        StandInCloud(Path(env[CLOUD_ENV])).instance_address(INSTANCE, addresses[0])
    else:
        instance = f"{INSTANCE}-multi"  # a bucket of its own beside the one-VM deployment's
        for k, address in enumerate(addresses):
            StandInCloud(Path(env[CLOUD_ENV])).instance_address(f"{instance}-{k}", address, address)
        rendezvous = next(p for p in range(20000 + pid % 10000, 32768) if _free(addresses[0], p))
        tfvars += f'instance_name = "{instance}"\nnode_count = {nodes}\nrendezvous_port = {rendezvous}\n'
        layout = {key: path.replace(f"{tmp}/vm0/", f"{tmp}/vm{{node}}/") for key, path in layout.items()}
    (repo / "infra" / "terraform.tfvars").write_text(tfvars)
    inventory = tmp / "hosts.yml"
    env.update({
        # A laptop without GNU tools (tests/standins/portability.py): the verbs must not call them.
        "PATH": laptop_path(no_gnu_bin, tools_path()),
        "GOOGLE_APPLICATION_CREDENTIALS": str(adc_file(laptop.home / "adc.json")),
        "NO_GCE_CHECK": "true",  # no probe of a metadata server outside loopback
        "STORAGE_EMULATOR_HOST": gcs_emulator,  # the laptop's own bucket access (the project's owner)
        "SSH_KNOWN_HOSTS": str(laptop.known_hosts),
        "SSH_PORT": str(port),
        **layout,
    })  # fmt: skip
    compose_project = f"standin{pid}" + ("" if nodes == 1 else f"n{nodes}")
    cloud = Deployment(repo, laptop, vm, None, env, inventory, gcs_emulator, "", compose_project, timings,  # type: ignore[arg-type]
                       vms=vms, shared=shared)  # fmt: skip
    with ExitStack() as stack:
        # The gate in front of the emulator: nothing allowed until Terraform names the VM's account.
        emulator_port = int(gcs_emulator.rsplit(":", 1)[1])
        cloud.gate = stack.enter_context(Gate(emulator_port, Policy("nobody", "", frozenset(), frozenset())))
        # Last: the run containers still there (siblings on the host's engine, they outlive their VM).
        stack.callback(_remove_containers, compose_project)
        for each in vms:
            stack.callback(each.remove)
            each.create()
        timings["boot_to_ssh_s"] = vm.boot_seconds[-1]
        # `make infra-up`, as the user runs it: Terraform (a new VM), the inventory, the playbook over SSH.
        cloud.vars_file.write_text(json.dumps(cloud.provision_vars(), indent=2))
        step = time.monotonic()
        done = cloud.make("infra-up", "AUTO_APPROVE=1", f"ARGS=-e @{cloud.vars_file}", timeout=1800)
        (tmp / "infra-up.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        assert "Apply complete! Resources:" in done.stdout and f"inventory: wrote {inventory}" in done.stdout
        timings["infra_up_s"] = time.monotonic() - step
        cloud.first_provision = done.stdout  # type: ignore[attr-defined]
        commit(repo, "Terraform's lock file, as `terraform init` advises")  # the tree is clean again
        hosts = list(yaml.safe_load(inventory.read_text())["trainer"]["hosts"].values())
        assert [(h["ansible_host"], int(h["ansible_port"])) for h in hosts] == [(a, port) for a in addresses]
        cloud.bucket = hosts[0]["trainer_bucket_url"].removeprefix("gs://")
        output = ["terraform", "-chdir=infra", "output", "-raw", "service_account_email"]
        account = subprocess.run(output, cwd=repo, env=env, capture_output=True, text=True, check=True).stdout
        cloud.gate.policy = Policy.from_iam_tf(repo / "infra" / "iam.tf", account, cloud.bucket)
        # What the bucket resource is on GCP: new and empty for this stand-in.
        gcs = emulator_client(gcs_emulator)
        if gcs.lookup_bucket(cloud.bucket) is None:
            gcs.create_bucket(cloud.bucket)
        for blob in gcs.list_blobs(cloud.bucket):
            blob.delete()
        for each in vms:
            stack.callback(
                each.ssh, f"cd {each.project_dir} && sudo docker compose down --volumes --rmi local"
            )
        yield cloud
    if nodes > 1:
        return
    timings["total_s"] = time.monotonic() - started
    timings_file = ROOT / ".ci-cache" / "cloud-standin-timings.json"
    timings_file.parent.mkdir(exist_ok=True)
    timings_file.write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2) + "\n")


def _remove_containers(compose_project: str) -> None:
    from tests.standins.vm import docker

    label = f"label=com.docker.compose.project={compose_project}"
    found = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
    if found:
        docker("rm", "-f", *found, check=False)


def _free(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


@pytest.fixture(autouse=True)
def _laptop_used_no_gnu_tools(request, no_gnu):
    """Every cloud test: the verbs it ran called none of the failing GNU tools (standins/portability.py)."""
    from tests.standins.portability import calls

    before = len(calls(no_gnu[1]))
    yield
    used = calls(no_gnu[1])[before:]
    assert not used, f"the laptop side called tools a Mac lacks or has in BSD form: {used}"
