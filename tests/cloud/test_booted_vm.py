"""The booted stand-in VM: the real playbook over SSH, real systemd units, real soft-offs, boots and idle
power-offs (tests/standins/vm.py says what is real and what stands in).

- `make provision` as the user runs it, twice: the second run changes nothing; what only a GPU or a kernel
  of its own can do is skipped by the one condition (site.yml's provision_has_kernel), nothing else.
- A spot preemption: `docker stop -t 30` of the VM is GCE's ACPI soft-off and power-off 30 s later; systemd
  stops the run's unit, the trainer checkpoints to the bucket; at the next boot the enabled unit resumes
  the run, which ends as an uninterrupted run does. Once on the same disk, once on a new one (the bucket).
- The idle timer powers the VM off for real (`systemctl poweroff`: the container exits), never while a run,
  an image build or an SSH session (provisioning, a cloud verb) is going on.
Figures (boot to SSH, provisioning, soft-off to the checkpoint in the bucket, boot to the resumed first
step) go to .ci-cache/cloud-booted-figures.json and the test output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import pytest

from tests import support
from tests.standins.deployment import LONG_RUN, STEPS_PER_EPOCH, Deployment
from tests.standins.vm import SPOT_GRACE_S, docker
from tests.support import ROOT, logged_step

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

FIGURES = ROOT / ".ci-cache" / "cloud-booted-figures.json"
FIGURES_SO_FAR: dict[str, object] = {}


def record(**figures: object) -> None:
    FIGURES_SO_FAR.update(figures)
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(FIGURES_SO_FAR, indent=2) + "\n")
    print(json.dumps(figures))


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP's counters of the one host."""
    line = next(line for line in output.splitlines() if re.search(r"\bok=\d+", line))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def task_results(output: str, name: str) -> list[str]:
    """What each run of task `name` reported (ok, changed, skipping, failed)."""
    blocks = re.split(r"^TASK \[", output, flags=re.M)
    found = []
    for block in blocks:
        if block.split("]", 1)[0].split(" : ")[-1] == name:
            found += re.findall(r"^(ok|changed|skipping|failed|fatal):", block, flags=re.M)
    return found


# ------------------------------------------------------------------ the playbook, as the user runs it


def test_provisioning_over_ssh_then_again_changes_nothing(cloud: Deployment):
    first = cloud.first_provision  # the session fixture's `make provision`
    counts = recap(first)
    assert counts["failed"] == 0 and counts["unreachable"] == 0 and counts["changed"] >= 10, counts
    # The one rule: what needs a GPU or a kernel of its own is skipped, and only that.
    for name in (
        "Make a filesystem on the data disk unless it already has one",
        "Mount the data disk by its stable name",
        "Ask nvidia-smi whether the driver is loaded",
        "Ask torch inside the trainer image whether it sees the GPU",
        "Run nvidia-smi in a container",
    ):
        assert task_results(first, name) == ["skipping"], name
    # Everything else ran for real on the booted machine.
    for name in ("Start Docker", "Check that the daemon answers", "Build the trainer image with compose",
                 "Turn the idle stop's timer on or off", "Install the unit of a run"):  # fmt: skip
        assert task_results(first, name) and "skipping" not in task_results(first, name), name

    started = time.monotonic()
    second = cloud.provision()
    cloud.timings["provision_rerun_s"] = time.monotonic() - started
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    assert recap(second.stdout)["changed"] == 0, [
        line for line in second.stdout.splitlines() if line.startswith("changed:")
    ]
    vm = cloud.vm
    assert vm.system_state() == "running", vm.failed_units()
    for unit in ("docker.service", "trainer-idle-stop.timer", "ssh.service"):
        assert vm.console("systemctl", "is-enabled", unit).strip() == "enabled", unit
        assert vm.console("systemctl", "is-active", unit).strip() == "active", unit
    # Defect 4: Docker 20.10 refuses every container when AppArmor is on and apparmor_parser is missing.
    assert "Status: install ok installed" in vm.console("dpkg", "-s", "apparmor")
    assert vm.console("test", "-x", "/sbin/apparmor_parser", check=False) == ""
    # Defect 3: unattended-upgrades keeps away from the driver (the chroot run checks the dpkg hold).
    blacklist = vm.console("cat", "/etc/apt/apt.conf.d/51trainer-nvidia-driver")
    for pattern in ("nvidia-", "libnvidia-", "libcuda"):
        assert f'"{pattern}";' in blacklist
    record(
        boot_to_ssh_s=round(vm.boot_seconds[0], 2),
        infra_up_with_first_provision_s=round(cloud.timings["infra_up_s"], 1),
        provision_rerun_s=round(cloud.timings["provision_rerun_s"], 1),
    )


# ------------------------------------------------------------------ preemption: soft-off, power-off, boot


def wait_for(predicate, what: str, timeout: float = 300) -> None:
    support.wait_for(predicate, what, timeout, poll=0.05)


def power_cut(cloud: Deployment) -> list[str]:
    """What a power-off does to the run's containers still running (siblings on the host's engine here):
    they die. Returns the ones it killed."""
    ids = docker(
        "ps", "-q", "--filter", f"label=com.docker.compose.project={cloud.compose_project}"
    ).stdout.split()
    if ids:
        docker("kill", *ids, check=False)
        docker("rm", "-f", *ids, check=False)
    return ids


@pytest.fixture(scope="module")
def reference(cloud: Deployment, tiny_csv, tiny_model_dir) -> dict:
    """An uninterrupted run with the same seed and arguments: where a resumed run must end."""
    done = cloud.make("train", "MODE=cloud", "RUN=boot-ref", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={LONG_RUN}", timeout=1200)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return cloud.manifest("boot-ref")


def start_and_preempt(cloud: Deployment, run: str, tiny_csv, tiny_model_dir) -> tuple[int, dict[str, float]]:
    """Start `run` detached, let it reach the middle of its second epoch, then soft-off the VM as GCE
    preempts a spot VM (power-off 30 s later). Returns the checkpoint step the stop saved and figures."""
    done = cloud.ops("start", run, *LONG_RUN.split(), timeout=900, DATA=str(tiny_csv),
                    MODEL=str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    wait_for(lambda: logged_step(cloud.run_folder(run), STEPS_PER_EPOCH + 15), "step 75 (mid second epoch)")
    before = set(cloud.markers(run))
    sent = time.time()
    off_s, exit_code = cloud.vm.soft_off(SPOT_GRACE_S)
    killed = power_cut(cloud)
    assert exit_code == 130, f"the VM did not power off cleanly within {SPOT_GRACE_S} s (exit {exit_code})"
    assert not killed, "the run's container outlived the soft-off"
    new = {step: blob for step, blob in cloud.markers(run).items() if step not in before}
    # The newest is the checkpoint saved on SIGTERM; on a busy machine the stop can land after the
    # second epoch's end, whose own checkpoint then comes first. The run is unfinished all the same.
    step = max(new, default=0)
    assert STEPS_PER_EPOCH + 15 <= step < 3 * STEPS_PER_EPOCH, (sorted(before), sorted(new))
    assert not cloud.in_bucket(f"runs/{run}/manifest.json")
    marker_at = new[step].time_created.timestamp() if new[step].time_created else sent + off_s
    return step, {
        "soft_off_to_marker_in_bucket_s": round(marker_at - sent, 2),
        "soft_off_to_power_off_s": round(off_s, 2),
    }


def test_a_spot_preemption_checkpoints_and_the_next_boot_resumes_the_run(
    cloud, reference, tiny_csv, tiny_model_dir
):
    run = "boot-1"
    step, figures = start_and_preempt(cloud, run, tiny_csv, tiny_model_dir)
    assert figures["soft_off_to_marker_in_bucket_s"] < SPOT_GRACE_S

    booted = time.monotonic()
    cloud.vm.boot()  # nobody starts the run: the enabled unit does, at boot
    wait_for(lambda: logged_step(cloud.run_folder(run), step + 1), f"the first step after {step}")
    figures["boot_to_first_resumed_step_s"] = round(time.monotonic() - booted, 2)
    # The order of the soft-off: systemd stopped the run's unit (the trainer checkpointed) before Docker.
    lines = cloud.vm.journal("-o", "cat").splitlines()
    unit = f"trainer-run@{run}.service"
    stopping = max(i for i, line in enumerate(lines) if line.startswith(f"Stopping {unit}"))
    stopped = next(i for i in range(stopping, len(lines)) if lines[i].startswith(f"Stopped {unit}"))
    docker_down = [i for i in range(stopping, len(lines)) if lines[i].startswith("Stopped docker.service")]
    assert docker_down and docker_down[0] > stopped, "Docker went down before the run's unit stopped"
    wait_for(lambda: cloud.in_bucket(f"runs/{run}/manifest.json"), "the resumed run's end", timeout=600)

    resumed = cloud.manifest(run)
    assert resumed["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert resumed["training"]["global_steps"] == reference["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert resumed["test_f1_macro"] == pytest.approx(reference["test_f1_macro"], abs=0.01)
    assert resumed["timing"]["attempts"] == 2
    # The manifest is the trainer's last word; the unit ends a moment later.
    wait_for(lambda: cloud.state(run) == "finished", "the unit's end", timeout=120)
    # A finished run's unit disables itself: the next boot does not start it again.
    assert (
        cloud.vm.console("systemctl", "is-enabled", f"trainer-run@{run}.service", check=False).strip()
        == "disabled"
    )
    record(preemption_same_disk={**figures, "checkpoint_step": step})


def test_a_preempted_vm_with_a_new_data_disk_resumes_from_the_bucket(
    cloud, reference, tiny_csv, tiny_model_dir
):
    run = "boot-2"
    step, figures = start_and_preempt(cloud, run, tiny_csv, tiny_model_dir)
    # A new data disk: the run folder and the run's record on the VM are gone.
    for folder in (cloud.run_folder(run), cloud.vm.data_mount / "jobs" / run):
        docker(
            "run",
            "--rm",
            "-v",
            f"{folder.parent}:/d",
            os.environ["TRAINER_TEST_BASE_IMAGE"],
            "rm",
            "-rf",
            f"/d/{folder.name}",
        )
    booted = time.monotonic()
    cloud.vm.boot()
    # The user (or make watch) starts the run again: it resumes from the bucket.
    done = cloud.make("train", "MODE=cloud", f"RUN={run}", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={LONG_RUN}", timeout=1200)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    figures["boot_to_run_finished_s"] = round(time.monotonic() - booted, 2)
    log = cloud.make("logs", f"RUN={run}", timeout=600).stdout
    assert f"restored checkpoint-{step} from gs://{cloud.bucket}/checkpoints/{run}" in log, log[-3000:]
    resumed = cloud.manifest(run)
    assert resumed["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert resumed["training"]["global_steps"] == reference["training"]["global_steps"]
    assert resumed["test_f1_macro"] == pytest.approx(reference["test_f1_macro"], abs=0.01)
    assert resumed["timing"]["attempts"] == 2  # the attempts record came back from the bucket too
    cloud.vm.console("systemctl", "reset-failed", check=False)  # the unit that found no run record at boot
    record(preemption_new_disk={**figures, "checkpoint_step": step})


# ------------------------------------------------------------------ the idle power-off


@pytest.fixture
def fast_idle_timer(cloud: Deployment):
    """The idle timer every 2 s instead of every minute; the last busy moment back-dated by the test. The
    check's service is freed from systemd's start rate limit (5 starts in 10 s by default), which a 2 s
    timer can reach under load: the service would fail with start-limit-hit and the timer with it, so no
    check would run for the rest of the test."""
    vm = cloud.vm
    timer = "/etc/systemd/system/trainer-idle-stop.timer.d"
    service = "/etc/systemd/system/trainer-idle-stop.service.d"
    vm.console("mkdir", "-p", timer, service)
    vm.console(
        "sh",
        "-c",
        f"printf '[Timer]\\nOnActiveSec=1s\\nOnUnitActiveSec=2s\\nAccuracySec=100ms\\n' > {timer}/test.conf"
        " && "
        f"printf '[Unit]\\nStartLimitIntervalSec=0\\n' > {service}/test.conf",
    )
    vm.console("systemctl", "daemon-reload")
    vm.console("systemctl", "restart", "trainer-idle-stop.timer")
    yield
    if not vm.running():
        vm.boot()
    vm.console("rm", "-rf", timer, service)
    vm.console("systemctl", "daemon-reload")
    vm.console("systemctl", "reset-failed", "trainer-idle-stop.service", "trainer-idle-stop.timer")
    vm.console("systemctl", "restart", "trainer-idle-stop.timer")


def idle_minutes(cloud: Deployment) -> int:
    conf = cloud.vm.console("cat", "/etc/default/trainer-run")
    return int(re.search(r"^TRAINER_IDLE_STOP_MINUTES=(\d+)", conf, re.M).group(1))


# A busy case ends by making the last busy moment fresh, and the test back-dates it while the case runs.
# Both under one lock on the VM, and the end leaves a mark the back-dating respects: otherwise a back-date
# just after the end (the case's process still exiting) would leave the VM idle by the clock with nothing
# busy, and the next tick would power it off between cases. The end runs while its case still counts as
# busy (inside the SSH session, in the build's own shell command, under ansible's persistent connection).
STATE = "/run/trainer-run"
END = f"flock {STATE}/test.lock sh -c 'touch {STATE}/test-ended {STATE}/last-busy'"


def back_date(cloud: Deployment) -> None:
    """As if the VM had been idle for longer than its setting (unless the running case has ended)."""
    minutes = idle_minutes(cloud) + 1
    stamp = f"touch -d '-{minutes} minutes' {STATE}/last-busy"
    cloud.vm.console(
        "sh",
        "-c",
        f'mkdir -p {STATE} && flock {STATE}/test.lock sh -c "[ -e {STATE}/test-ended ] || {stamp}"',
    )


def idle_checks(cloud: Deployment) -> list[str]:
    return [line for line in cloud.vm.journal("-u", "trainer-idle-stop.service", "-o", "cat").splitlines()
            if line.startswith("trainer-run: ")]  # fmt: skip


def stays_up_while(cloud: Deployment, reason: str, busy) -> None:
    """While `busy` runs (a callable, in a thread; it must succeed), the idle check sees `reason` and the
    VM stays up, however long ago its last busy moment was (back-dated past the limit on every tick). Each
    `busy` ends with the VM busy or its last busy moment fresh, so no tick between cases finds it idle."""
    cloud.vm.console("rm", "-f", f"{STATE}/test-ended")
    seen = len(idle_checks(cloud))
    results: list[object] = []

    def work():
        try:
            results.append(busy())
        except BaseException as exc:  # handed to the test's thread
            results.append(exc)

    def said_busy(since: int) -> bool:
        return any(
            line.startswith("trainer-run: busy: ") and reason in line for line in idle_checks(cloud)[since:]
        )

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_for(lambda: said_busy(seen) or not worker.is_alive(), f"the idle check to see {reason}", 120)
    except AssertionError as exc:
        units = ("trainer-idle-stop.timer", "trainer-idle-stop.service")
        status = cloud.vm.console("systemctl", "status", "--no-pager", *units, check=False)
        raise AssertionError(f"{exc}; last checks: {idle_checks(cloud)[-3:]}; {status[-2000:]}") from None
    assert said_busy(seen), (idle_checks(cloud)[seen:][-5:], results)
    mark = len(idle_checks(cloud))
    while worker.is_alive():  # idle for longer than the limit, as far as the clock goes
        back_date(cloud)
        time.sleep(0.5)
    worker.join()
    (result,) = results
    assert not isinstance(result, BaseException), result
    if isinstance(result, subprocess.CompletedProcess):
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert cloud.vm.running(), f"the VM powered off during {reason}"
    after = idle_checks(cloud)[mark:]
    assert said_busy(mark), after[-5:]  # ticks with the clock past the limit: busy, not idle
    assert not any("idle for" in line for line in idle_checks(cloud)[seen:]), after


def test_the_idle_timer_powers_off_but_never_while_busy(cloud, fast_idle_timer, tiny_csv, tiny_model_dir):
    vm = cloud.vm
    # A cloud verb's SSH session (make ssh, as a user types into it).
    session = f"sleep 8; sudo {END}; exit\n"
    stays_up_while(cloud, "an SSH session", lambda: cloud.make("ssh", timeout=120, input_text=session))
    # An image build, started on the VM's own console (no SSH session); --no-cache: it takes its time.
    dockerfile = f"FROM {os.environ['TRAINER_TEST_BASE_IMAGE']}\nRUN sleep 8\n"
    build = ["docker", "exec", "-i", vm.name, "sh", "-c",
             f"docker build --no-cache --network host -q -t standin-busy:1 - && {END}"]  # fmt: skip
    stays_up_while(
        cloud,
        "an image build",
        lambda: subprocess.run(build, input=dockerfile, text=True, check=True, capture_output=True),
    )

    # Provisioning (make provision: an SSH session the whole time, then ansible's persistent connection).
    def provision() -> subprocess.CompletedProcess:
        done = cloud.provision()
        vm.console("sh", "-c", END)  # ansible's connection persists 60 s after the playbook: still busy
        return done

    stays_up_while(cloud, "an SSH session", provision)
    # A run.
    run = "idle-busy"
    done = cloud.ops(
        "start", run, *LONG_RUN.split(), timeout=900, DATA=str(tiny_csv), MODEL=str(tiny_model_dir)
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    try:
        wait_for(lambda: logged_step(cloud.run_folder(run), 1), "the run's first step")
        stays_up_while(cloud, f"run {run}", lambda: time.sleep(8))  # the run goes on after it
    finally:
        assert cloud.make("stop", f"RUN={run}", timeout=120).returncode == 0

    # Nothing going on (once ansible's persistent SSH connection, ControlPersist=60s, has closed): the
    # timer powers the VM off for real (systemctl poweroff: the container exits with 130).
    vm.console("rm", "-f", f"{STATE}/test-ended")
    started = time.monotonic()
    while vm.running() and time.monotonic() - started < 120:
        back_date(cloud)
        time.sleep(1)
    assert not vm.running(), f"the idle VM still runs: {idle_checks(cloud)[-3:]}"
    took = time.monotonic() - started
    assert vm.exit_code() == 130, "not a clean poweroff"
    vm.boot()
    assert any(f"(limit {idle_minutes(cloud)}): systemctl poweroff" in line for line in idle_checks(cloud))
    record(idle_back_dated_to_power_off_s=round(took, 2))


# ------------------------------------------------------------------ a VM made anew by an apply


def test_a_vm_replaced_by_a_spot_switch_is_provisioned_by_the_apply(
    cloud: Deployment, tiny_csv, tiny_model_dir
):
    """Switching `spot` makes GCP replace the VM (ForceNew): a bare boot disk, the data disk kept. The
    `make infra-apply` that replaced it provisions it before it says done, so the next run just trains."""
    tfvars = cloud.repo / "infra" / "terraform.tfvars"
    original = tfvars.read_text()
    # The new instance: a new system disk from the image, the same data disk.
    cloud.vm.remove()
    cloud.vm.create()
    assert cloud.vm.console("sh", "-c", "command -v docker || echo none").strip() == "none"
    try:
        tfvars.write_text(original + "spot = true\n")
        done = cloud.make("infra-apply", "AUTO_APPROVE=1", f"ARGS=-e @{cloud.vars_file}", timeout=1800)
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        assert "must be replaced" in done.stdout and "watch: provisioning the new VM" in done.stdout, (
            done.stdout[-3000:]
        )
        assert recap(done.stdout)["failed"] == 0 and recap(done.stdout)["changed"] >= 10
        assert "trainer_host_spot: true" in cloud.inventory.read_text()
        short = "--epochs 1 --batch-size 16 --set model.max_length=32 --set runtime.require_gpu=false"
        done = cloud.make("train", "MODE=cloud", "RUN=after-replace", f"DATA={tiny_csv}",
                          f"MODEL={tiny_model_dir}", f"ARGS={short}", timeout=1200)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        # The grace followed the provisioning model: a spot VM's.
        assert "TRAINER_STOP_GRACE_PERIOD=25s" in (cloud.vm.project_dir / ".env").read_text()
    finally:
        tfvars.write_text(original)
        again = cloud.make("infra-apply", "AUTO_APPROVE=1", f"ARGS=-e @{cloud.vars_file}", timeout=1800)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert "TRAINER_STOP_GRACE_PERIOD=110s" in (cloud.vm.project_dir / ".env").read_text()
