"""The cloud verbs refuse bad input on the laptop, in one `error:` line with exit status 2, before any
connection to the VM: run names, DATA and MODEL paths, ARGS, SSH port, the inventory's values, the data
bucket, credentials (real make, real `python -m ops`; no VM is needed, and none is reached: the inventory
names an address nothing listens on, and `ssh` here is a stand-in that writes down any call and fails).
The same refusals against the stand-in VM are in test_cloud_verbs.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud.conftest import free_port
from tests.support import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "terraform_output.json"
# What ops reads from its environment; the test's own environment must not leak any of them in.
SETTINGS = ("INVENTORY", "SSH_KEY", "SSH_PORT", "TRAINER_VM_PROJECT_DIR", "TRAINER_VM_DATA_MOUNT",
            "DATA", "MODEL", "INFRA_DIR", "TFVARS", "TERRAFORM", "SOURCE", "STORAGE_EMULATOR_HOST", "RUN",
            "ARGS")  # fmt: skip
RUN_RULE = "a run name has letters, digits, '.', '_' and '-' only, a letter or digit first"


def write_inventory(env: dict[str, str], path: Path, **changes: object) -> Path:
    """`python -m ops inventory` from the recorded outputs, node 0 at 127.0.0.1 (nothing listens for SSH
    there: every case stops before SSH) and `changes` as outputs."""
    outputs = json.loads(FIXTURE.read_text())
    outputs["external_ip"] = {"value": "127.0.0.1"}
    outputs["external_ips"] = {"value": ["127.0.0.1"]}
    outputs["instance_names"] = {"value": [outputs["instance_name"]["value"]]}
    outputs.update({name: {"value": value} for name, value in changes.items()})
    done = subprocess.run(
        [sys.executable, "-m", "ops", "inventory", "--from", "-"], input=json.dumps(outputs), cwd=ROOT,
        env={**env, "INVENTORY": str(path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def laptop(tmp_path, laptop_env) -> dict[str, str]:
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    # An `ssh` that writes down that it was called, and fails as ssh does when nothing answers.
    fake_bin, ssh_log = tmp_path / "fake-bin", tmp_path / "ssh-calls.log"
    fake_bin.mkdir()
    (fake_bin / "ssh").write_text(f'#!/bin/sh\necho "ssh $*" >> {ssh_log}\nexit 255\n')
    (fake_bin / "ssh").chmod(0o755)
    env = {k: v for k, v in laptop_env.items() if k not in SETTINGS}
    env.update({"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true", "HOME": str(tmp_path),
                "PATH": f"{fake_bin}:{env['PATH']}", "PYTHONPATH": str(ROOT),
                # The bucket API is a closed loopback port: a case that reached it would fail there.
                "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}"})  # fmt: skip
    inventory = write_inventory(env, tmp_path / "hosts.yml")
    yield {"env": env, "key": str(key), "inventory": str(inventory), "tmp": str(tmp_path)}
    called = ssh_log.read_text() if ssh_log.exists() else ""
    assert not called, f"ssh was run, though every case stops before any connection:\n{called}"


def make(laptop: dict, *args: str, inventory: str | None = None, **env: str) -> subprocess.CompletedProcess:
    where = [f"SSH_KEY={laptop['key']}", f"INVENTORY={inventory or laptop['inventory']}"]
    return subprocess.run(
        ["make", "--no-print-directory", *where, *args],
        cwd=ROOT, env={**laptop["env"], **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ops(laptop: dict, *args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """`python -m ops ARGS...` with the laptop's settings (as make would pass them) and `env` over them."""
    settings = {"SSH_KEY": laptop["key"], "INVENTORY": laptop["inventory"], **env}
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=cwd, env={**laptop["env"], **settings}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_error(done: subprocess.CompletedProcess) -> str:
    """A user error as `make VERB` reports it: one `error:` line (ops exits 2, and so does make)."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def ops_error(done: subprocess.CompletedProcess) -> str:
    """`python -m ops` itself: exit status 2 and nothing on stderr but the one `error:` line."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    return done.stderr.rstrip("\n")


@pytest.mark.parametrize("run", ["my run", "it's", "x;id", "$$(id)", "..", "-rf", "a/b", "é"])
def test_a_run_name_outside_letters_digits_dot_dash_underscore_is_refused(laptop, run):
    shown = run.replace("$$", "$")
    line = one_error(make(laptop, "train", "MODE=cloud", f"RUN={run}"))
    assert line == f"error: RUN={shown!r}: {RUN_RULE}"
    assert one_error(make(laptop, "fetch", f"RUN={run}")).startswith(f"error: RUN={shown!r}")
    for verb in ("start", "logs", "state", "stop", "fetch"):
        assert ops_error(ops(laptop, verb, shown)) == f"error: RUN={shown!r}: {RUN_RULE}", verb


def test_make_passes_ops_exit_status_2(laptop):
    """make reports the recipe's own exit status: the one `error:` line, then make's `Error 2`."""
    done = make(laptop, "train", "MODE=cloud", "RUN=a b")
    assert done.returncode != 0 and "Error 2" in done.stderr.splitlines()[-1], done.stderr


def test_data_and_model_must_exist(laptop, tmp_path):
    line = one_error(make(laptop, "train", "MODE=cloud", "RUN=ok", f"DATA={tmp_path}/no.csv"))
    assert line.startswith(f"error: DATA={tmp_path}/no.csv does not exist: pass a CSV/JSONL/Parquet file")
    data = tmp_path / "tweets.csv"
    data.write_text("text,label\nhi,a\n")
    line = one_error(make(laptop, "train", "MODE=cloud", "RUN=ok", f"DATA={data}", f"MODEL={tmp_path}/none"))
    assert line.startswith(f"error: MODEL={tmp_path}/none is not a folder")
    odd = tmp_path / "my tweets.csv"
    odd.write_text("text,label\nhi,a\n")
    line = one_error(make(laptop, "train", "MODE=cloud", "RUN=ok", f"DATA={odd}"))
    assert line.startswith(f"error: DATA={odd}: name ") and line.endswith(
        "letters, digits, '.', '_' and '-' only"
    )
    (tmp_path / "my model").mkdir()
    line = one_error(
        make(laptop, "train", "MODE=cloud", "RUN=ok", f"DATA={data}", f"MODEL={tmp_path}/my model")
    )
    assert line.startswith(f"error: MODEL={tmp_path}/my model: name ") and "letters, digits" in line
    line = ops_error(ops(laptop, "start", "ok", DATA="gs://tweet-trainer-demo-artifacts"))
    assert line == "error: DATA=gs://tweet-trainer-demo-artifacts: name an object or folder in a bucket, " \
        "gs://bucket/path"  # fmt: skip


def test_args_with_a_control_character_are_refused(laptop):
    done = ops(laptop, "train", "ok", "--set", "data.path=a\nb")
    assert ops_error(done).startswith("error: ARGS holds a control character")


def test_the_inventory_and_ssh_port_are_checked_before_any_connection(laptop, tmp_path):
    data = tmp_path / "tweets.csv"
    data.write_text("text,label\nhi,a\n")
    train = ["train", "MODE=cloud", "RUN=ok", f"DATA={data}"]
    line = one_error(make(laptop, *train, inventory=f"{tmp_path}/none.yml"))
    assert line == (
        f"error: no inventory at {tmp_path}/none.yml: run `make infra-up` "
        "(or `make inventory` after a terraform apply)"
    )
    line = one_error(make(laptop, *train, SSH_PORT="22 -oProxyCommand=id"))
    assert line.startswith("error: SSH port '22 -oProxyCommand=id' is not a number from 1 to 65535")
    inventory = Path(laptop["inventory"])
    inventory.write_text(inventory.read_text().replace('"127.0.0.1"', '"-oProxyCommand=id"'))
    line = one_error(make(laptop, *train))
    assert (
        line.startswith("error: inventory ")
        and "'-oProxyCommand=id' is not an IP address or host name" in line
    )


def test_a_missing_ssh_key_says_how_to_make_one(laptop, tmp_path):
    line = ops_error(ops(laptop, "state", "ok", SSH_KEY=str(tmp_path / "none")))
    assert line.startswith(f"error: SSH key {tmp_path / 'none'} not found: set SSH_KEY=<private key>")


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        ("gs://other-bucket/x.csv", True),
        ("gs://other-bucket/folder/", True),
        ("gs://shared-data/x.csv", False),
        ("gs://own-bucket/data/x.csv", False),
    ],
)
def test_data_from_a_bucket_the_vm_may_not_read_is_refused_before_any_connection(
    laptop, tmp_path, gcs_emulator, data, refused
):
    """The VM's account reads its own bucket and the data_read_buckets Terraform granted it (the
    inventory's trainer_data_read_buckets); DATA in any other bucket would fail on the VM after the
    project was shipped and the image built: the laptop refuses it first, naming data_read_buckets."""
    inventory = write_inventory(
        laptop["env"],
        tmp_path / "buckets.yml",
        bucket_url="gs://own-bucket",
        data_read_buckets=["shared-data"],
    )
    # The emulator has neither bucket: a DATA that passes the check fails at the next one, the bucket's.
    done = ops(laptop, "start", "r1", DATA=data, INVENTORY=str(inventory), STORAGE_EMULATOR_HOST=gcs_emulator)
    line = ops_error(done)
    name = data.removeprefix("gs://").partition("/")[0]
    if refused:
        assert line == (
            f"error: DATA={data}: the VM's account may read only gs://own-bucket and the buckets in "
            f'data_read_buckets; add "{name}" to data_read_buckets in your tfvars and make infra-apply'
        )
    else:
        assert "data_read_buckets" not in line
        assert line.startswith(f"error: bucket gs://{name} does not exist"), line
    assert "train-cloud:" not in done.stdout  # nothing shipped, nothing started


def test_credentials_are_loaded_not_just_found(laptop, tmp_path):
    empty = tmp_path / "key.json"
    empty.write_text("{}")
    line = one_error(make(laptop, "train", "MODE=cloud", "RUN=ok", GOOGLE_APPLICATION_CREDENTIALS=str(empty)))
    assert line.startswith(
        f"error: GOOGLE_APPLICATION_CREDENTIALS={empty}: The file {empty} does not have a valid type"
    )
    assert line.endswith(
        "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
    )
    missing = tmp_path / "none.json"
    line = ops_error(ops(laptop, "train", "ok", GOOGLE_APPLICATION_CREDENTIALS=str(missing)))
    assert line.startswith(f"error: GOOGLE_APPLICATION_CREDENTIALS={missing} does not exist")
    done = ops(laptop, "bucket", "creds")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "credentials: user login, project stand-in-project\n"
    line = ops_error(ops(laptop, "bucket", "creds", GOOGLE_APPLICATION_CREDENTIALS=str(empty)))
    assert line.startswith(f"error: GOOGLE_APPLICATION_CREDENTIALS={empty}: The file {empty} does not")


@pytest.mark.parametrize("words", [[], ["nope"], ["check"], ["fetch", "gs://b/runs/r1"]])
def test_a_bucket_verb_without_its_arguments_shows_its_usage(laptop, words):
    assert ops_error(ops(laptop, "bucket", *words)) == (
        "error: usage: python -m ops bucket creds | check URL | runs URL | fetch URL DEST"
    )


def test_an_unknown_verb_names_the_known_ones(laptop):
    line = ops_error(ops(laptop, "trian"))
    assert line.startswith("error: unknown verb 'trian': one of init, plan, price, offers, down, apply, up, ")


def test_fetch_never_overwrites_a_run_folder(laptop, tmp_path):
    work = tmp_path / "work"
    (work / "runs" / "r1").mkdir(parents=True)
    (work / "runs" / "r1" / "metrics.json").write_text("{}")
    for source in ("bucket", "vm"):
        done = ops(laptop, "fetch", "r1", cwd=work, SOURCE=source)
        assert ops_error(done) == "error: runs/r1 already exists: move it away first (nothing was fetched)"
    assert (work / "runs" / "r1" / "metrics.json").read_text() == "{}"
    line = ops_error(ops(laptop, "fetch", "r2", cwd=work, SOURCE="laptop"))
    assert line.startswith("error: SOURCE='laptop': fetch from the bucket (SOURCE=bucket, the default)")
