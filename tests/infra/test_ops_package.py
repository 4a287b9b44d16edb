"""The laptop package ops/ as a whole: what it may import, what it may run, and that the rules it shares
with the VM side have one owner each.

- trainer/ (what the image runs) imports nothing from ops/: the image does not ship ops.
- ops spawns only ssh, terraform, ansible-playbook (and at most the venv's Python): no bash, tar, sed,
  gcloud... Every spawn is seen through Python's audit hooks (subprocess.Popen, os.exec, os.posix_spawn,
  os.spawn, os.system), installed in the `python -m ops` process by a sitecustomize.py put first on
  PYTHONPATH, which writes each event to the file OPS_SPAWN_LOG names.
- A run's name, a bucket URL and a run's states are each written down once: trainer/run_state.py (names,
  states), trainer/gcs.py (bucket URLs); ops/ and the VM's run manager (trainer-run) use those.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud.conftest import free_port
from tests.standins.tf_harness import BASE_VARS
from tests.support import ROOT, TOOLS_BIN

FIXTURE = ROOT / "tests" / "fixtures" / "terraform_output.json"
SETTINGS = ("INVENTORY", "SSH_KEY", "SSH_PORT", "TRAINER_VM_PROJECT_DIR", "TRAINER_VM_DATA_MOUNT",
            "INFRA_DIR", "TFVARS", "TERRAFORM", "DATA", "MODEL", "GOOGLE_APPLICATION_CREDENTIALS",
            "STORAGE_EMULATOR_HOST", "PYTHONPATH")  # fmt: skip


# ---- (a) the trainer imports nothing from ops -----------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found |= {
                a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)
            }
    return found


def test_the_trainer_imports_nothing_from_ops():
    files = sorted((ROOT / "trainer").rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m == "ops" or m.startswith("ops.")
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # ... and ops uses the trainer's VM-side modules, so the check above is about a real edge.
    assert "trainer.gcs" in imported_modules(ROOT / "ops" / "inventory.py")


# ---- (b) every executable ops spawns ----------------------------------------------------------------

SITECUSTOMIZE = """
import json, os, sys

_LOG = os.environ.get("OPS_SPAWN_LOG")
# Only the `python -m ops` process itself: a Python it starts (ansible-playbook) is not ops.
if _LOG and sys.orig_argv[1:3] == ["-m", "ops"]:
    def _first(args):
        if isinstance(args, (str, bytes, os.PathLike)):
            return os.fsdecode(args).split()[0] if os.fsdecode(args).strip() else ""
        args = list(args or [])
        return os.fsdecode(args[0]) if args else ""

    def _hook(event, args):
        if event == "subprocess.Popen":
            exe = os.fsdecode(args[0]) if args[0] is not None else _first(args[1])
        elif event in ("os.exec", "os.posix_spawn"):
            exe = os.fsdecode(args[0])
        elif event == "os.spawn":
            exe = os.fsdecode(args[1])
        elif event == "os.system":
            exe = "/bin/sh"
        else:
            return
        with open(_LOG, "a") as log:
            log.write(json.dumps({"event": event, "exe": exe, "verb": sys.orig_argv[3:4]}) + "\\n")

    sys.addaudithook(_hook)
"""
ALLOWED = {"ssh", "terraform", "ansible-playbook"}


def spawned(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_ops_spawns_only_ssh_terraform_ansible_playbook_and_its_python(stand_in_google, tmp_path, laptop_env):
    hooks, log = tmp_path / "hooks", tmp_path / "spawned.jsonl"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    key, adc = tmp_path / "id_ed25519", tmp_path / "adc.json"
    key.write_text("a key file\n")
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    tf = stand_in_google.terraform(tmp_path / "infra")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.1")  # nothing listens for SSH on the closed port
    tf.init()
    tf.apply()
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in BASE_VARS.items()))
    inventory = tmp_path / "hosts.yml"
    env = {k: v for k, v in tf.env.items() if k not in SETTINGS}
    env.update({
        "PATH": laptop_env["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(hooks),
        "OPS_SPAWN_LOG": str(log), "INFRA_DIR": str(tf.workdir), "TFVARS": str(tfvars),
        "INVENTORY": str(inventory), "SSH_KEY": str(key), "SSH_PORT": str(free_port()),
        "GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}", "AUTO_APPROVE": "1",
        # ansible-playbook runs, and stops at once on its inventory: no VM is needed to see it spawned.
        "ANSIBLE_INVENTORY_ENABLED": "host_list", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
    })  # fmt: skip

    def ops(*args: str, **more: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ops", *args], capture_output=True, text=True, env={**env, **more},
            cwd=ROOT, timeout=300,
        )  # fmt: skip

    outcomes = {
        "inventory": ops("inventory"),  # terraform output -json
        "price": ops("price"),  # terraform version, init, plan, show
        "state": ops("state", "r1"),  # ssh to a closed port: it fails
        "ssh": ops("ssh", "true"),  # replaces itself with ssh (os.exec)
        "bucket": ops("bucket", "creds"),  # google-auth only
        "provision": ops("provision", PATH=f"{TOOLS_BIN}:{env['PATH']}"),  # ansible-playbook, as make's PATH
    }
    assert outcomes["inventory"].returncode == 0, outcomes["inventory"].stderr
    assert outcomes["price"].returncode == 0, outcomes["price"].stderr[-2000:]
    assert outcomes["bucket"].returncode == 0, outcomes["bucket"].stderr
    assert (
        outcomes["state"].returncode == 2
        and "cannot read run r1's state on the VM" in outcomes["state"].stderr
    )
    assert outcomes["ssh"].returncode == 255  # ssh's own status: the connection was refused
    assert outcomes["provision"].returncode == 2 and "the playbook failed" in outcomes["provision"].stderr
    events = spawned(log)
    by_verb: dict[str, set[str]] = {}
    for event in events:
        by_verb.setdefault(event["verb"][0], set()).add(Path(event["exe"]).name)
    # The hook saw each kind of spawn (so an empty list below would mean something).
    assert by_verb["inventory"] == {"terraform"} and by_verb["price"] == {"terraform"}
    assert by_verb["state"] == {"ssh"} and by_verb["ssh"] == {"ssh"}
    assert by_verb["provision"] == {"ansible-playbook"}
    assert "bucket" not in by_verb
    assert {e["event"] for e in events} >= {"subprocess.Popen", "os.exec"}
    others = {e["exe"] for e in events if Path(e["exe"]).name not in ALLOWED and e["exe"] != sys.executable}
    assert others == set(), events


# ---- (c) one owner per rule -------------------------------------------------------------------------

OWNERS = {
    "run name": "trainer/run_state.py",
    "bucket URL": "trainer/gcs.py",
    "run states": "trainer/run_state.py",
}
STATE_WORDS = r"(?:running|finished|failed|interrupted|unknown)"
PATTERNS = {
    # The regular expression of a run's name, as written in Python or in a shell/grep pattern.
    "run name": re.compile(r"\[A-Za-z0-9\]\[A-Za-z0-9\._-\]\*|\[A-Za-z0-9\]\[A-Za-z0-9_\.-\]\*"),
    # A gs:// URL's bucket rule (a gs:// literal followed by a character class).
    "bucket URL": re.compile(r"gs://\[a-z0-9"),
    # Two or more state words as a tuple/list ("finished", "failed") or a shell alternative (finished|failed).
    "run states": re.compile(
        rf"""(['"]){STATE_WORDS}\1\s*,\s*(['"]){STATE_WORDS}\2|\b{STATE_WORDS}\|{STATE_WORDS}\b"""
    ),
}


def sources() -> list[Path]:
    files = [*sorted((ROOT / "ops").glob("*.py")), *sorted((ROOT / "trainer").rglob("*.py"))]
    return [*files, ROOT / "ansible" / "roles" / "trainer_host" / "files" / "trainer-run"]


def code_text(path: Path) -> str:
    """The file without its comment lines (a comment may name the rule: the code may not repeat it); the
    lines keep their numbers. A rule may span lines (a tuple written one item a line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join("" if line.lstrip().startswith("#") else line for line in lines)


def where(rule: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in sources():
        text = code_text(path)
        for match in PATTERNS[rule].finditer(text):
            found.setdefault(str(path.relative_to(ROOT)), []).append(text.count("\n", 0, match.start()) + 1)
    return found


def test_the_rule_patterns_find_what_their_owners_write():
    for rule, owner in OWNERS.items():
        assert owner in where(rule), f"the {rule} pattern no longer finds {owner}'s rule: update the test"


@pytest.mark.parametrize("rule", ["run name", "bucket URL"])
def test_each_rule_is_written_once_in_its_owner(rule):
    assert set(where(rule)) == {OWNERS[rule]}, where(rule)


def test_run_states_are_written_once_in_run_state_py():
    assert set(where("run states")) == {OWNERS["run states"]}, where("run states")


def test_a_gcloud_login_is_read_without_running_gcloud(tmp_path, laptop_env):
    hooks, log = tmp_path / "hooks", tmp_path / "spawned.jsonl"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r"}))  # fmt: skip
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gcloud").write_text("#!/bin/sh\nexit 1\n")  # a gcloud CLI is there, as on a user's laptop
    (fake / "gcloud").chmod(0o755)
    env = {k: v for k, v in laptop_env.items() if k not in SETTINGS}
    env.update({"HOME": str(tmp_path), "PYTHONPATH": str(hooks), "OPS_SPAWN_LOG": str(log),
                "PATH": f"{fake}:{env['PATH']}", "NO_GCE_CHECK": "true"})  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "ops", "bucket", "creds"], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("credentials: user login"), done.stderr
    assert spawned(log) == []
