"""`make runs` as a comparison table (ops.runs_table.show_runs): one row per run, figures from its manifest.

What stands in: the bucket is the GCS emulator on loopback (manifests and checkpoints planted as the
trainer's bucket sync leaves them, read through the project's own client: STORAGE_EMULATOR_HOST); the VM is
a stand-in session whose run manager answers `list` and `manifests` as trainer-run prints them. The VM side
itself (trainer-run manifests, trainer/run_state.py as a file) runs for real on planted run folders; the
booted stand-in VM's `make runs` is tests/cloud/test_detached_runs.py's.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ops import runs_table
from ops.__main__ import main
from tests.cloud.conftest import emulator_client
from tests.support import ROOT

pytestmark = pytest.mark.gcs

BUCKET = "runs-table-test"
MANAGER = ROOT / "ansible" / "roles" / "trainer_host" / "files" / "trainer-run"


def manifest(f1: float, cost: float, started: str | None, **changes) -> dict:
    """A cloud run's manifest as trainer/artifacts.py writes it (the figures the table reads)."""
    m = {
        "run_name": "x",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "started_at": started,
        "environment": {"in_container": True, "device": "cuda", "gpu_name": "Tesla T4", "gpu_count": 1},
        "training": {
            "global_steps": 930,
            "epochs_completed": 3.0,
            "epochs_planned": 3.0,
            "best_metric": {"eval_f1_macro": 0.91234},
        },
        "distributed": {"world_size": 1, "processes_per_machine": 1, "machines": 1},
        "timing": {"wall_seconds": 3725.4, "attempts": 1},
        "estimated_cost_usd": cost,
        "test_f1_macro": f1,
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            m[section][name] = value
        else:
            m[section] = value
    return m


@pytest.fixture
def bucket(gcs_emulator, monkeypatch):
    """An empty bucket of the emulator, the project's client pointed at it; put(path, object) plants."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    gcs = emulator_client(gcs_emulator)
    if gcs.lookup_bucket(BUCKET) is None:
        gcs.create_bucket(BUCKET)
    for blob in gcs.list_blobs(BUCKET):
        blob.delete()

    def put(path: str, value) -> None:
        data = value if isinstance(value, str | bytes) else json.dumps(value)
        gcs.bucket(BUCKET).blob(path).upload_from_string(data)

    yield put
    for blob in gcs.list_blobs(BUCKET):
        blob.delete()


@dataclass
class Conn:
    bucket_url: str = f"gs://{BUCKET}"
    rank: int = 0


@dataclass
class StandInVM:
    """ops.vm.Session's run-manager side: `list` prints NAME<TAB>STATE<TAB>COST lines (exit 255: ssh's own
    status, the VM unreachable); `manifests NAME...` prints {name: manifest} as trainer-run does (None: an
    older run manager, which has no such subcommand)."""

    listing: list[str] | None = None
    on_disk: dict[str, dict] | None = field(default_factory=dict)
    conn: Conn = field(default_factory=Conn)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"node {self.conn.rank}"

    def manager(self, *words: str, capture: bool = False) -> subprocess.CompletedProcess:
        self.calls.append(words)
        if self.listing is None:
            return subprocess.CompletedProcess(words, 255, "", "ssh: connect to host: Connection refused\n")
        if words == ("list",):
            return subprocess.CompletedProcess(words, 0, "".join(f"{line}\n" for line in self.listing), "")
        if words[0] == "manifests" and self.on_disk is not None:
            found = {name: self.on_disk[name] for name in words[1:] if name in self.on_disk}
            return subprocess.CompletedProcess(words, 0, json.dumps(found) + "\n", "")
        usage = "trainer-run: error: usage: trainer-run start|exec|halt|stop|state|logs|list|idle-check ...\n"
        return subprocess.CompletedProcess(words, 2, "", usage)


def table(
    vm: StandInVM, capsys, sort: str = "date", fmt: str = "csv", others: tuple[StandInVM, ...] = ()
) -> tuple[list[dict], str, str]:
    """(rows as CSV read them back, stdout, stderr) of show_runs (`others`: nodes 1, 2, ...)."""
    assert runs_table.show_runs([vm, *others], sort, fmt) == 0  # type: ignore[list-item]
    out, err = capsys.readouterr()
    return (list(csv.DictReader(io.StringIO(out))) if fmt == "csv" else []), out, err


def plant_three(put) -> None:
    l4 = manifest(
        0.88, 1.2, "2026-12-02T09:00:00Z", environment__gpu_name="NVIDIA L4", environment__spot=False
    )
    a100 = manifest(0.93, 4.5, "2026-12-01T08:00:00Z", environment__gpu_name="NVIDIA A100-SXM4-40GB",
                    environment__gpu_count=2, distributed__machines=2, environment__spot=True)  # fmt: skip
    put("runs/b-l4/manifest.json", l4)
    put("runs/c-a100/manifest.json", a100)
    put("runs/a-t4/manifest.json", manifest(0.81, 0.35, "2026-12-03T10:00:00Z"))
    for run in ("a-t4", "b-l4", "c-a100"):
        put(f"runs/{run}/metrics.json", "{}")


# ------------------------------------------------------------------ the figures


def test_each_column_comes_from_the_manifest(bucket, capsys):
    bucket("runs/t4-run/manifest.json", manifest(
        0.812345, 0.5655, "2026-12-03T10:00:00Z", git_commit="89abcdef0123456789abcdef0123456789abcdef-dirty",
        environment__spot=True, training__epochs_completed=2.4, timing__wall_seconds=3725.4,
    ))  # fmt: skip
    vm = StandInVM(["t4-run\tfinished\t0.5655"])
    (row,), out, _ = table(vm, capsys)
    assert row == {
        "RUN": "t4-run", "STATE": "finished", "TEST_F1": "0.8123", "BEST_VAL": "eval_f1_macro=0.9123",
        "EPOCHS": "2.4/3", "GPU": "T4x1x1", "SPOT": "yes", "WALL": "1:02:05", "COST_USD": "0.5655",
        "COMMIT": "89abcde-dirty", "STARTED": "2026-12-03T10:00:00Z", "WHERE": "vm,bucket",
    }  # fmt: skip
    assert out.splitlines()[0] == ",".join(runs_table.COLUMNS)
    assert vm.calls == [("list",)]  # the bucket has the finished run's manifest: no second SSH call


def test_gpu_kind_count_and_nodes_spot_and_cpu(bucket, capsys):
    plant_three(bucket)
    cpu = manifest(0.5, 0.0, None, environment={"device": "cpu", "gpu_name": None, "gpu_count": 0},
                   git_commit=None)  # fmt: skip
    bucket("runs/d-cpu/manifest.json", cpu)
    rows, _, _ = table(StandInVM([]), capsys)
    assert {r["RUN"]: (r["GPU"], r["SPOT"], r["COMMIT"]) for r in rows} == {
        "a-t4": ("T4x1x1", "-", "0123456"),  # no spot key: the manifest does not say
        "b-l4": ("L4x1x1", "no", "0123456"),
        "c-a100": ("A100x2x2", "yes", "0123456"),
        "d-cpu": ("cpu", "-", "-"),
    }


def test_missing_figures_show_a_dash(bucket, capsys):
    bucket("runs/empty/manifest.json", "{}")  # a manifest with nothing in it
    bucket("runs/unreadable/manifest.json", "{not json")
    bucket("runs/odd/manifest.json", {"training": {"best_metric": {"eval_loss": None}, "epochs_completed": 1},
                                      "environment": "cuda", "timing": [], "test_f1_macro": "high",
                                      "estimated_cost_usd": True})  # fmt: skip
    bucket("runs/only-artifacts/metrics.json", "{}")  # no manifest: not finished, not listed
    bucket("checkpoints/resumable/checkpoint-5/model.safetensors", b"")
    vm = StandInVM(["running-1\trunning\t-", "failed-1\tfailed\t-", "gone\tunknown\t-"])
    rows, _, _ = table(vm, capsys)
    by_run = {r.pop("RUN"): r for r in rows}
    dashes = {c: "-" for c in runs_table.COLUMNS if c not in ("RUN", "STATE", "WHERE")}
    assert by_run == {
        "empty": {"STATE": "finished", **dashes, "WHERE": "bucket"},
        "failed-1": {"STATE": "failed", **dashes, "WHERE": "vm"},
        "gone": {"STATE": "unknown", **dashes, "WHERE": "vm"},
        "odd": {"STATE": "finished", **dashes, "EPOCHS": "1/-", "WHERE": "bucket"},
        "resumable": {"STATE": "interrupted", **dashes, "WHERE": "bucket"},
        "running-1": {"STATE": "running", **dashes, "WHERE": "vm"},
        "unreadable": {"STATE": "finished", **dashes, "WHERE": "bucket"},
    }
    assert vm.calls == [("list",)]  # no finished run of the VM's lacks its manifest: nothing more to read


def test_a_real_run_s_manifest_fills_its_row(bucket, capsys, tiny_config_file):
    """The trainer's own manifest (a tiny CPU run, 2 epochs): what trainer/artifacts.py writes is what the
    table reads, the start being the first attempt's."""
    from trainer.cli import main as train

    assert train(["--config", str(tiny_config_file), "--mode", "local"]) == 0
    folder = tiny_config_file.parent / "run"
    written = json.loads((folder / "manifest.json").read_text())
    first = json.loads((folder / "attempts.json").read_text())["attempts"][0]["started"]
    bucket("runs/tiny/manifest.json", (folder / "manifest.json").read_text())
    capsys.readouterr()  # the trainer's own output
    (row,), _, _ = table(StandInVM([]), capsys)
    assert row["TEST_F1"] == f"{written['test_f1_macro']:.4f}"
    (metric, value), *_ = written["training"]["best_metric"].items()
    assert row["BEST_VAL"] == f"{metric}={value:.4f}"
    assert (row["EPOCHS"], row["GPU"], row["SPOT"]) == ("2/2", "cpu", "-")
    assert row["STARTED"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first))
    assert row["WALL"] != "-" and row["COST_USD"] == "0.0000"


@pytest.mark.parametrize(
    ("max_steps", "global_step", "epoch", "planned"),
    [
        (30, 30, 2.0, 2.0),  # train.epochs 2 of 15 steps each, all trained
        (45, 20, 1.3333, 3.0),  # early stopping after 20 of 3 x 15 steps
        (20, 20, 1.3333, 1.33),  # train.max_steps 20 of 15 a epoch
        (30, 0, None, None),  # no step yet
    ],
)
def test_planned_epochs_are_the_trainer_s_planned_steps_in_epochs(max_steps, global_step, epoch, planned):
    from trainer.artifacts import planned_epochs

    assert planned_epochs(max_steps, global_step, epoch) == planned


# ------------------------------------------------------------------ order and format


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        # by start; runs without one (a running run, an old manifest) after them, by name
        ("date", ["c-a100", "b-l4", "a-t4", "old", "running-1"]),
        ("f1", ["c-a100", "b-l4", "a-t4", "old", "running-1"]),  # best first; no F1 last
        ("cost", ["old", "a-t4", "b-l4", "c-a100", "running-1"]),  # cheapest first; no cost last
    ],
)
def test_sort_orders(bucket, capsys, sort, order):
    plant_three(bucket)
    bucket("runs/old/manifest.json", manifest(0.7, 0.1, None))  # written before manifests had started_at
    rows, _, _ = table(StandInVM(["running-1\trunning\t-"]), capsys, sort=sort)
    assert [r["RUN"] for r in rows] == order


def test_the_text_table_is_aligned_and_holds_what_the_csv_holds(bucket, capsys):
    plant_three(bucket)
    vm = StandInVM(["a-t4\tfinished\t0.35", "running-1\trunning\t-"])
    rows, _, _ = table(vm, capsys, sort="f1")
    _, out, err = table(vm, capsys, sort="f1", fmt="table")
    lines = out.splitlines()
    assert lines[-1].startswith("(figures: each run's manifest, '-' where it has none")
    header, body = lines[0], lines[1:-1]
    assert header.split() == list(runs_table.COLUMNS)
    starts = [header.index(name) for name in runs_table.COLUMNS]
    for line, row in zip(body, rows, strict=True):
        assert [line[s:].split()[0] for s in starts] == list(row.values())  # each cell under its heading
        assert all(line[s - 1] == " " for s in starts[1:])
    assert err == ""


def test_csv_quotes_what_needs_it(bucket, capsys):
    bucket("runs/r1/manifest.json", manifest(0.9, 0.2, None, training__best_metric={"eval_f1,macro": 0.5}))
    (row,), out, _ = table(StandInVM([]), capsys)
    assert row["BEST_VAL"] == "eval_f1,macro=0.5000" and '"eval_f1,macro=0.5000"' in out


# ------------------------------------------------------------------ the VM's side of the listing


def test_a_finished_run_only_on_the_vm_has_its_figures_from_the_vm_disk(bucket, capsys):
    plant_three(bucket)
    disk = manifest(0.77, 0.42, "2026-12-04T00:00:00Z")
    vm = StandInVM(["a-t4\tfinished\t0.35", "vm-only\tfinished\t0.42", "running-1\trunning\t-"],
                   on_disk={"vm-only": disk})  # fmt: skip
    rows, _, err = table(vm, capsys)
    (row,) = [r for r in rows if r["RUN"] == "vm-only"]
    assert (row["TEST_F1"], row["GPU"], row["WHERE"], row["STARTED"]) == (
        "0.7700",
        "T4x1x1",
        "vm",
        disk["started_at"],
    )
    assert vm.calls == [("list",), ("manifests", "vm-only")]  # one more call, for the runs the bucket lacks
    assert err == ""


def test_an_older_run_manager_leaves_those_figures_out_in_one_line(bucket, capsys):
    vm = StandInVM(["vm-only\tfinished\t0.42"], on_disk=None)
    (row,), _, err = table(vm, capsys)
    assert row["COST_USD"] == "0.42" and row["TEST_F1"] == "-"  # the listing's cost still shows
    assert err.splitlines() == [
        "runs: the manifests of vm-only on the VM could not be read (an older run manager? make provision "
        "updates it): their figures show '-'"
    ]


def test_an_unreachable_vm_lists_the_bucket_only(bucket, capsys):
    plant_three(bucket)
    vm = StandInVM(None)
    rows, _, err = table(vm, capsys, sort="cost")
    assert [(r["RUN"], r["WHERE"]) for r in rows] == [
        ("a-t4", "bucket"),
        ("b-l4", "bucket"),
        ("c-a100", "bucket"),
    ]
    assert err == "runs: the VM does not answer over SSH (stopped?): runs from the bucket only\n"
    assert vm.calls == [("list",)]


def test_the_run_manager_prints_the_manifests_of_the_runs_on_its_disk(tmp_path):
    """trainer-run manifests NAME... (the VM's run manager, bash) through trainer/run_state.py as a file,
    as on the VM: python3, the standard library only."""
    runs_dir = tmp_path / "runs"
    for name, text in (("done", json.dumps(manifest(0.8, 0.3, None))), ("broken", "{"), ("list", "[1]")):
        (runs_dir / name).mkdir(parents=True)
        (runs_dir / name / "manifest.json").write_text(text)
    (runs_dir / "running").mkdir()
    conf = tmp_path / "trainer-run.conf"
    conf.write_text(f"TRAINER_PROJECT_DIR={shlex.quote(str(ROOT))}\nTRAINER_RUNS_DIR={shlex.quote(str(runs_dir))}\n"
                    f"TRAINER_JOBS_DIR={shlex.quote(str(tmp_path / 'jobs'))}\n")  # fmt: skip
    env = {
        **os.environ,
        "TRAINER_RUN_CONF": str(conf),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }

    def manager(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(MANAGER), *words], env=env, capture_output=True, text=True)

    done = manager("manifests", "done", "broken", "list", "running", "absent")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"done": manifest(0.8, 0.3, None)}
    assert json.loads(manager("manifests").stdout) == {}
    bad = manager("manifests", "done", "x;id")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("trainer-run: error: run name 'x;id': letters, digits")


# ------------------------------------------------------------------ SORT and FORMAT from make


def test_csv_output_is_the_csv_alone(bucket, capsys, monkeypatch, tmp_path):
    """python -m ops runs with FORMAT=csv: standard output parses as CSV (the credentials line goes to
    stderr), so `make runs FORMAT=csv > runs.csv` is a spreadsheet."""
    plant_three(bucket)
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    for name, value in {"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true", "SORT": "cost",
                        "FORMAT": "csv"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("ops.__main__.Settings.nodes", lambda self: [StandInVM(["a-t4\tfinished\t0.35"])])
    assert main(["runs"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(runs_table.COLUMNS) and [r[0] for r in rows[1:]] == ["a-t4", "b-l4", "c-a100"]
    assert err == "credentials: user login, project stand-in-project\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"SORT": "fastest"}, "error: SORT='fastest': one of date, f1, cost"),
        ({"FORMAT": "xlsx"}, "error: FORMAT='xlsx': one of table, csv"),
        (
            {"SORT": "F1", "FORMAT": "json"},
            "error: SORT='F1': one of date, f1, cost; FORMAT='json': one of table, csv",
        ),
    ],
)
def test_a_bad_sort_or_format_is_one_line_before_anything_is_read(monkeypatch, capsys, settings, message):
    for name in ("SORT", "FORMAT", "INVENTORY", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INVENTORY", "/nonexistent/hosts.yml")  # nothing is read: no inventory needed
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert main(["runs"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")


def test_make_runs_passes_sort_and_format_to_ops():
    env = {k: v for k, v in os.environ.items() if k not in ("SORT", "FORMAT", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "runs", "SORT=cheapest", "FORMAT=xml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: SORT='cheapest': one of date, f1, cost; FORMAT='xml': one of table, csv"]


def test_several_nodes_fold_into_one_row_per_run_and_a_node_down_says_so(bucket, capsys):
    """Node 0 keeps the records; another node that is down, or not running a run node 0 runs, is said in
    the run's state; runs that are over do not care about a node that is down."""
    node0 = StandInVM(["both\trunning\t-", "half\trunning\t-", "over\tfinished\t0.1"], on_disk=None)
    node1 = StandInVM(["both\trunning\t-", "half\tstopped\t-", "over\tstopped\t-"], conn=Conn(rank=1))
    rows, _, _ = table(node0, capsys, others=(node1,))
    assert {r["RUN"]: r["STATE"] for r in rows} == {
        "both": "running", "half": "running (node 1 not running)", "over": "finished",
    }  # fmt: skip
    down = StandInVM(None, conn=Conn(rank=2))
    rows, _, err = table(node0, capsys, others=(node1, down))
    assert {r["RUN"]: r["STATE"] for r in rows} == {
        "both": "running (node 2 down)",
        "half": "running (node 1 not running, node 2 down)",
        "over": "finished",
    }
    assert "runs: node 2 does not answer over SSH (down?)" in err
