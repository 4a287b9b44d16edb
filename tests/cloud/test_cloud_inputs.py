"""The cloud verbs refuse bad input on the laptop, in one line, before any connection to the VM: run
names, DATA and MODEL paths, ARGS, SSH port, the inventory's values, credentials (real make, real
scripts/tf_cloud.sh; no VM is needed, and none is reached: the inventory names an address nothing
listens on). The same refusals against the stand-in VM are in test_cloud_verbs.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cloud.conftest import free_port
from tests.support import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "terraform_output.json"


@pytest.fixture
def laptop(tmp_path) -> dict[str, str]:
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    inventory = tmp_path / "hosts.yml"
    outputs = json.loads(FIXTURE.read_text())
    # Nothing is reached: every case stops before SSH, and the bucket API is a closed loopback port.
    outputs["external_ip"] = {"value": "127.0.0.1"}
    outputs["external_ips"] = {"value": ["127.0.0.1"]}
    outputs["instance_names"] = {"value": [outputs["instance_name"]["value"]]}
    write = ["python3", "scripts/make_inventory.py", "--from", "-", "--out", str(inventory)]
    subprocess.run(write, input=json.dumps(outputs), cwd=ROOT, check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_PORT", "STORAGE_EMULATOR_HOST")}
    env.update({"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true", "HOME": str(tmp_path),
                "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}"})  # fmt: skip
    return {"env": env, "key": str(key), "inventory": str(inventory), "tmp": str(tmp_path)}


def make(laptop: dict, *args: str, inventory: str | None = None, **env: str) -> subprocess.CompletedProcess:
    where = [f"SSH_KEY={laptop['key']}", f"INVENTORY={inventory or laptop['inventory']}"]
    return subprocess.run(
        ["make", "--no-print-directory", *where, *args],
        cwd=ROOT, env={**laptop["env"], **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize("run", ["my run", "it's", "x;id", "$$(id)", "..", "-rf", "a/b", "é"])
def test_a_run_name_outside_letters_digits_dot_dash_underscore_is_refused(laptop, run):
    line = one_error(make(laptop, "train", "MODE=cloud", f"RUN={run}"))
    shown = run.replace("$$", "$")
    assert line == (
        f"error: RUN='{shown}': a run name has letters, digits, '.', '_' and '-' only, "
        "and starts with a letter or digit"
    )
    assert one_error(make(laptop, "fetch", f"RUN={run}")).startswith(f"error: RUN='{shown}'")


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
    assert line.startswith(f"error: DATA={odd}: name the file with letters, digits")


def test_args_with_a_control_character_are_refused(laptop):
    env = {**laptop["env"], "SSH_KEY": laptop["key"], "INVENTORY": laptop["inventory"]}
    done = subprocess.run(["scripts/tf_cloud.sh", "train", "ok", "--set", "data.path=a\nb"],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert one_error(done).startswith("error: ARGS holds a control character")


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
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "trainer.bucket", "creds"], cwd=ROOT,
                          env=laptop["env"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "credentials: user login, project stand-in-project\n"


def test_fetch_never_overwrites_a_run_folder(laptop, tmp_path):
    work = tmp_path / "work"
    (work / "runs" / "r1").mkdir(parents=True)
    (work / "runs" / "r1" / "metrics.json").write_text("{}")
    env = {**laptop["env"], "SSH_KEY": laptop["key"], "INVENTORY": laptop["inventory"]}
    done = subprocess.run([str(ROOT / "scripts/tf_cloud.sh"), "fetch", "r1"], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert one_error(done) == "error: runs/r1 already exists: move it away first (nothing was fetched)"
    assert (work / "runs" / "r1" / "metrics.json").read_text() == "{}"
