"""Several nodes: what Terraform opens between them and what each node learns, planned and applied with
real Terraform over infra/ and the stand-in google provider (tests/standins/tf_harness.py stands in for GCP).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.standins.tf_harness import Terraform, TerraformError
from tests.support import ROOT

pytestmark = pytest.mark.terraform


@pytest.fixture(scope="module")
def planner(stand_in_google, tmp_path_factory) -> Terraform:
    tf = stand_in_google.terraform(tmp_path_factory.mktemp("multinode-plan"))
    tf.init()
    return tf


def firewalls(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c["address"]: c["change"]["after"]
        for c in plan["resource_changes"]
        if c["type"] == "google_compute_firewall"
    }


def test_three_nodes_reach_each_other_on_the_rendezvous_and_collective_ports_only(planner):
    plan = planner.plan({"node_count": 3, "gpu_count": 2, "rendezvous_port": 29400})
    rules = firewalls(plan)
    assert set(rules) == {"google_compute_firewall.ssh", "google_compute_firewall.internal[0]"}
    internal = rules["google_compute_firewall.internal[0]"]
    # From the nodes, to the nodes: no address range, so nothing outside the trainer's VMs gets in.
    assert internal["source_tags"] == internal["target_tags"] == ["tweet-trainer-node"]
    assert not internal.get("source_ranges") and internal["direction"] == "INGRESS"
    assert internal["allow"] == [{"protocol": "tcp", "ports": ["29400", "32768-60999"]}]
    assert not internal.get("deny")
    # SSH stays as it was: port 22 from the caller's range only.
    assert rules["google_compute_firewall.ssh"]["allow"] == [{"protocol": "tcp", "ports": ["22"]}]
    vms = [c["change"]["after"] for c in plan["resource_changes"] if c["type"] == "google_compute_instance"]
    assert len(vms) == 3 and all("tweet-trainer-node" in vm["tags"] for vm in vms)
    outputs = {k: v.get("value") for k, v in plan["planned_values"]["outputs"].items()}
    assert outputs["rendezvous_port"] == 29400


def test_one_node_opens_nothing_between_nodes(planner):
    rules = firewalls(planner.plan({}))
    assert set(rules) == {"google_compute_firewall.ssh"}


def test_rendezvous_port_is_validated(planner):
    with pytest.raises(TerraformError) as failed:
        planner.plan({"node_count": 2, "rendezvous_port": 40000})
    message = " ".join(failed.value.output.split())
    assert "rendezvous_port must be a whole number from 1024 to 32767" in message


def test_applied_nodes_learn_node_0s_address_in_the_subnet(stand_in_google, tmp_path, laptop_env):
    tf = stand_in_google.terraform(tmp_path / "infra")
    tf.init()
    for i, address in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
        tf.cloud.instance_address(f"tweet-trainer-{i}", address)
    tf.apply({"node_count": 3, "gpu_count": 4})
    values = {name: o["value"] for name, o in tf.output().items()}
    assert values["main_process_address"] == values["internal_ips"][0]
    assert values["main_process_address"].startswith("10.42.0.")  # subnet_cidr's default 10.42.0.0/24
    # `python -m ops inventory --from -` with INVENTORY=-: the inventory the playbook would read, printed.
    settings = ("SSH_PORT", "TRAINER_VM_PROJECT_DIR", "TRAINER_VM_DATA_MOUNT", "INFRA_DIR", "TERRAFORM")
    env = {k: v for k, v in laptop_env.items() if k not in settings}
    done = subprocess.run(
        [sys.executable, "-m", "ops", "inventory", "--from", "-"],
        input=json.dumps(tf.output()),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "INVENTORY": "-", "SSH_KEY": "/keys/id_ed25519"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    hosts = list(yaml.safe_load(done.stdout)["trainer"]["hosts"].values())
    assert [h["trainer_host_node_rank"] for h in hosts] == [0, 1, 2]
    assert {h["trainer_host_node_count"] for h in hosts} == {3}
    assert {h["trainer_host_main_address"] for h in hosts} == {values["main_process_address"]}
    assert {h["trainer_host_gpu_count"] for h in hosts} == {4}
    assert {h["trainer_host_rendezvous_port"] for h in hosts} == {29500}
    assert [h["ansible_host"] for h in hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert {h["trainer_host_project_dir"] for h in hosts} == {"/opt/trainer"}
