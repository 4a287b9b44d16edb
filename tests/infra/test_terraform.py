"""The Terraform module in infra/ and the make verbs around it.

Real Terraform (`fmt`, `init`, `validate`, `test`) runs over the module offline, with the stand-in
google provider generated from hashicorp/google 6.50.0's schema (tests/standins/tf_harness.py); plans,
applies and destroys are in test_terraform_apply.py. Besides: structural checks of the parsed module
(python-hcl2), a check against the provider's schema with clearer messages than Terraform's
(tests/infra/terraform_schema.py), checkov, and the make targets' error messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import hcl2
import pytest

from ops.terraform import Terraform as OpsTerraform
from tests.infra.terraform_schema import Module, ProviderSchema, check_attribute_paths, check_module, strings
from tests.standins.tf_harness import Terraform, schema_tarball
from tests.support import ROOT, require, tool

pytestmark = pytest.mark.terraform

INFRA = ROOT / "infra"
CONTRACT_OUTPUTS = {
    "instance_name", "zone", "project_id", "external_ip", "ssh_user", "bucket_name", "bucket_url",
    "service_account_email", "data_disk_device_name", "gpu_type", "gpu_count",
}  # fmt: skip


def module_paths(folder: Path = INFRA) -> list[Path]:
    """The committed .tf files (a user's backend_override.tf is not part of the module)."""
    return sorted(p for p in folder.glob("*.tf") if not p.name.endswith("_override.tf"))


def parse(text: str) -> dict[str, Any]:
    return hcl2.loads(text)


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    return {p.name: parse(p.read_text()) for p in module_paths()}


@pytest.fixture(scope="module")
def module(parsed: dict[str, dict[str, Any]]) -> Module:
    return Module(list(parsed.values()))


def expr(value: Any) -> str:
    """An hcl2 value as the expression text it came from: `"${var.x}"` -> `var.x`, `"\"a\""` -> `"a"`."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        value = value[2:-1]
    return re.sub(r"\s+", " ", str(value)).strip()


def literal(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected exactly one {name} block"
    return blocks[0]


def resource(module: Module, rtype: str, name: str) -> dict[str, Any]:
    found = module.resources.get((rtype, name))
    assert found is not None, f"{rtype}.{name} is not in infra/"
    return found


# ---- terraform fmt -----------------------------------------------------------------------------


def test_terraform_fmt_is_clean():
    terraform = tool("terraform")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", str(INFRA)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"terraform fmt -recursive infra would change:\n{done.stdout}{done.stderr}"


# ---- structure ---------------------------------------------------------------------------------


def test_versions_pin_terraform_and_the_google_provider_with_an_upper_bound(parsed):
    terraform = block(parsed["versions.tf"], "terraform")
    assert literal(terraform["required_version"]) == ">= 1.5.0"
    google = block(terraform, "required_providers")["google"]
    assert literal(google["source"]) == "hashicorp/google"
    version = literal(google["version"])
    assert re.search(r">=\s*6", version) and re.search(r"<\s*7", version), version
    # Local state by default: no backend in the committed files; GCS only through backend.hcl.
    assert not any("backend" in b for p in parsed.values() for b in p.get("terraform", []))
    assert (INFRA / "backend.hcl.example").is_file()


def test_vm_has_a_t4_on_an_n1_machine_and_debian_12(module):
    vm = resource(module, "google_compute_instance", "trainer")
    variables = module.variables
    # The placement's (the first offer's, or the one ops chose): infra/locals.tf, tests/cloud/test_offers.py.
    assert expr(vm["machine_type"]) == "local.machine_type"
    assert literal(variables["machine_type"]["default"]) == "n1-standard-4"
    # Attached to N1 machine types only; G2 and A2 come with their GPUs (tests/infra/test_gpu_kinds.py).
    accelerator = block(vm, "dynamic")['"guest_accelerator"']
    assert expr(accelerator["for_each"]) == "local.attach_gpus ? [local.gpu_type] : []"
    content = block(accelerator, "content")
    assert expr(content["type"]) == "guest_accelerator.value"
    assert expr(content["count"]) == "local.gpu_count"
    assert literal(variables["gpu_type"]["default"]) == "nvidia-tesla-t4"
    assert variables["gpu_count"]["default"] == 1
    image = expr(block(block(vm, "boot_disk"), "initialize_params")["image"])
    assert image == "var.boot_image"
    assert literal(variables["boot_image"]["default"]) == "debian-cloud/debian-12"


def test_gpu_vm_terminates_on_host_maintenance_whatever_the_inputs(module):
    scheduling = block(resource(module, "google_compute_instance", "trainer"), "scheduling")
    # A literal, not a variable: the rule lives in code.
    assert scheduling["on_host_maintenance"] == '"TERMINATE"'


def test_spot_switch_sets_provisioning_preemption_restart_and_termination(module):
    scheduling = block(resource(module, "google_compute_instance", "trainer"), "scheduling")
    locals_ = module.locals
    assert expr(scheduling["preemptible"]) == "local.spot"  # the placement's: var.spot, or the offer's
    assert expr(scheduling["provisioning_model"]) == "local.provisioning_model"
    assert expr(locals_["provisioning_model"]) == 'local.spot ? "SPOT" : "STANDARD"'
    assert expr(scheduling["automatic_restart"]) == "local.automatic_restart"
    assert expr(locals_["automatic_restart"]) == "!local.spot"
    assert expr(scheduling["instance_termination_action"]) == "local.instance_termination_action"
    # A termination action whenever spot or a maximum run duration is on, and only then.
    assert expr(locals_["needs_termination_action"]) == "local.spot || local.max_run_seconds > 0"
    assert expr(locals_["instance_termination_action"]) == (
        "local.needs_termination_action ? var.termination_action : null"
    )
    assert module.variables["spot"]["default"] is False
    assert literal(module.variables["termination_action"]["default"]) == "STOP"


def test_maximum_run_duration_is_optional_and_in_seconds(module):
    scheduling = block(resource(module, "google_compute_instance", "trainer"), "scheduling")
    (dynamic,) = scheduling["dynamic"]
    body = dynamic['"max_run_duration"']
    assert expr(body["for_each"]) == "local.max_run_seconds > 0 ? [local.max_run_seconds] : []"
    assert expr(block(body, "content")["seconds"]) == "max_run_duration.value"
    assert expr(module.locals["max_run_seconds"]) == "floor(var.max_run_duration_hours * 3600)"


def test_data_disk_is_separate_and_attached_by_a_stable_device_name(module):
    disk = resource(module, "google_compute_disk", "data")
    assert expr(disk["size"]) == "var.data_disk_size_gb"
    attached = block(resource(module, "google_compute_instance", "trainer"), "attached_disk")
    assert expr(attached["source"]) == "google_compute_disk.data[count.index].id"
    assert expr(attached["device_name"]) == "var.data_disk_device_name"
    assert literal(attached["mode"]) == "READ_WRITE"
    # No prevent_destroy: infra-down must be able to delete it (KEEP_DATA_DISK=1 keeps it).
    assert "lifecycle" not in disk


def test_bucket_is_private_versioned_and_cleans_up_old_checkpoints(module):
    bucket = resource(module, "google_storage_bucket", "artifacts")
    assert bucket["uniform_bucket_level_access"] is True
    assert literal(bucket["public_access_prevention"]) == "enforced"
    assert block(bucket, "versioning")["enabled"] is True
    assert expr(bucket["force_destroy"]) == "var.force_destroy"
    assert module.variables["force_destroy"]["default"] is False
    rules = bucket["lifecycle_rule"]
    prefixes = [literal(p) for r in rules for p in block(r, "condition").get("matches_prefix", [])]
    assert "checkpoints/" in prefixes
    assert all(literal(block(r, "action")["type"]) == "Delete" for r in rules)


def test_vm_runs_as_a_dedicated_service_account_with_least_roles(module):
    vm = resource(module, "google_compute_instance", "trainer")
    identity = block(vm, "service_account")
    assert expr(identity["email"]) == "google_service_account.trainer.email"
    scopes = [literal(s) for s in identity["scopes"]]
    assert not any(s.endswith(("cloud-platform", "cloud-platform.read-only")) for s in scopes), scopes
    assert set(scopes) <= {
        "https://www.googleapis.com/auth/devstorage.read_write",
        "https://www.googleapis.com/auth/logging.write",
    }
    grants = {
        (rtype, literal(body["role"]))
        for (rtype, _), body in module.resources.items()
        if rtype.endswith(("_iam_member", "_iam_binding", "_iam_policy"))
    }
    assert grants == {
        ("google_storage_bucket_iam_member", "roles/storage.objectAdmin"),
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer"),
        ("google_project_iam_member", "roles/logging.logWriter"),
    }
    bucket_grant = resource(module, "google_storage_bucket_iam_member", "trainer_objects")
    assert expr(bucket_grant["bucket"]) == "google_storage_bucket.artifacts.name"


def test_data_read_buckets_get_object_viewer_for_the_vm_account_only(module):
    """DATA=gs://other-bucket/... reads through these grants: one read-only member per listed bucket
    (the VM's own bucket left out: it has objectAdmin), for the VM's service account, nothing else."""
    grant = resource(module, "google_storage_bucket_iam_member", "data_read")
    assert expr(grant["for_each"]) == "setsubtract(toset(var.data_read_buckets), [local.bucket_name])"
    assert expr(grant["bucket"]) == "each.value"
    assert literal(grant["role"]) == "roles/storage.objectViewer"
    assert expr(grant["member"]) == expr(
        resource(module, "google_storage_bucket_iam_member", "trainer_objects")["member"]
    )
    variable = module.variables["data_read_buckets"]
    assert expr(variable["type"]) == "list(string)" and variable["default"] == []
    assert "gs://" in literal(variable["validation"][0]["error_message"])
    output = module.outputs["data_read_buckets"]
    assert expr(output["value"]) == (
        "sort([for grant in google_storage_bucket_iam_member.data_read : grant.bucket])"
    )


def test_firewall_allows_ssh_only_from_the_given_ranges(module):
    rules = {
        name: body for (rtype, name), body in module.resources.items() if rtype == "google_compute_firewall"
    }
    assert rules, "no firewall rule"
    for name, rule in rules.items():
        ranges = rule.get("source_ranges", [])
        assert isinstance(ranges, str) or not {"0.0.0.0/0", "::/0"} & {literal(r) for r in ranges}, name
        assert expr(rule["network"]) == "google_compute_network.trainer.id", (
            f"{name}: not on the default network"
        )
    ssh = rules["ssh"]
    assert expr(ssh["source_ranges"]) == "var.ssh_source_ranges"
    assert [literal(p) for p in block(ssh, "allow")["ports"]] == ["22"]
    variable = module.variables["ssh_source_ranges"]
    assert "default" not in variable, "ssh_source_ranges must be required"
    assert any("/0" in expr(v["condition"]) for v in variable["validation"])


def test_shielded_vm_is_on(module):
    shielded = block(resource(module, "google_compute_instance", "trainer"), "shielded_instance_config")
    assert shielded["enable_vtpm"] is True
    assert shielded["enable_integrity_monitoring"] is True
    assert expr(shielded["enable_secure_boot"]) == "var.secure_boot"


def test_every_variable_is_typed_described_and_validated_unless_boolean(module):
    problems = []
    for name, body in module.variables.items():
        if not body.get("type"):
            problems.append(f"{name}: no type")
        if not literal(body.get("description", "")).strip():
            problems.append(f"{name}: no description")
        if expr(body.get("type")) != "bool":
            validations = body.get("validation", [])
            if not validations or not all(literal(v.get("error_message", "")) for v in validations):
                problems.append(f"{name}: no validation with an error message")
    assert not problems, problems


def test_every_output_is_described_and_the_contract_outputs_exist(module):
    outputs = module.outputs
    assert set(outputs) >= CONTRACT_OUTPUTS, CONTRACT_OUTPUTS - set(outputs)
    assert all(literal(body.get("description", "")).strip() for body in outputs.values())
    assert expr(outputs["bucket_url"]["value"]) == "google_storage_bucket.artifacts.url"
    assert expr(outputs["data_disk_device_name"]["value"]) == "var.data_disk_device_name"


def test_tfvars_example_sets_the_required_variables_and_only_known_ones(module):
    example = parse((INFRA / "terraform.tfvars.example").read_text())
    required = {name for name, body in module.variables.items() if "default" not in body}
    assert required == {"project_id", "ssh_source_ranges"}
    assert required <= set(example)
    assert {k for k in example if not k.startswith("__")} <= set(module.variables)
    # The commented-out settings name real variables too.
    text = (INFRA / "terraform.tfvars.example").read_text()
    commented = set(re.findall(r"^# ?(\w+)\s+=", text, flags=re.M))
    assert len(commented) >= 10 and commented <= set(module.variables), commented - set(module.variables)


def test_terraform_test_files_cover_every_validation_and_the_spot_switch(module):
    files = sorted((INFRA / "tests").glob("*.tftest.hcl"))
    assert files
    expected_failures: set[str] = set()
    spot_runs = 0
    for path in files:
        parsed = parse(path.read_text())
        assert '"google"' in parsed.get("mock_provider", [{}])[0], f"{path.name}: no mock_provider google"
        runs = [body for item in parsed.get("run", []) for body in item.values() if isinstance(body, dict)]
        assert runs
        settings = [*parsed.get("variables", []), *(v for run in runs for v in run.get("variables", []))]
        for values in settings:
            unknown = {k for k in values if not k.startswith("__")} - set(module.variables)
            assert not unknown, f"{path.name}: variables the module does not declare: {unknown}"
        for body in runs:
            expected_failures |= {expr(v).removeprefix("var.") for v in body.get("expect_failures", [])}
            if any(v.get("spot") is True for v in body.get("variables", [])):
                spot_runs += 1
    validated = {name for name, body in module.variables.items() if body.get("validation")}
    assert validated - expected_failures == set(), "validations without a failing terraform test run"
    # A run expects a variable's validation to fail, or a resource's precondition.
    resources = {f"{rtype}.{name}" for rtype, name in module.resources}
    assert expected_failures <= set(module.variables) | resources, expected_failures
    assert spot_runs >= 1


# ---- the google provider's real schema ---------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> ProviderSchema:
    path = schema_tarball()
    require(
        path is not None and path.is_file(),
        "the google provider schema (cdktf-cdktf-provider-google 16.12.1) is not cached: "
        "run `bash -c 'source .ci/services.d/30-google-schema.sh'` or set TRAINER_TEST_GOOGLE_SCHEMA",
    )
    assert path is not None
    return ProviderSchema.load(path)


def test_schema_is_google_provider_6_50(schema):
    assert schema.version == "6.50.0"
    assert "google_compute_instance" in schema.resources
    fields = schema.block(schema.resources["google_compute_instance"]).fields
    assert fields["machine_type"].required and not fields["scheduling"].required


def test_module_matches_the_google_provider_schema(schema, module):
    assert check_module(schema, module) == []


MUTATIONS = {
    "misspelled nested argument": (
        "compute.tf", "on_host_maintenance ", "on_host_maintainance",
        "resource google_compute_instance.trainer.scheduling: "
        "unsupported argument or block 'on_host_maintainance'",
    ),
    "misspelled top-level argument": (
        "storage.tf", "force_destroy = var.force_destroy", "force_destory = var.force_destroy",
        "resource google_storage_bucket.artifacts: unsupported argument or block 'force_destory'",
    ),
    "misspelled block": (
        "compute.tf", "shielded_instance_config {", "shielded_instance_configs {",
        "resource google_compute_instance.trainer: unsupported argument or block 'shielded_instance_configs'",
    ),
    "unknown resource type": (
        "network.tf", 'resource "google_compute_firewall" "ssh"', 'resource "google_compute_firewal" "ssh"',
        "resource google_compute_firewal.ssh: "
        "the google provider 6.50.0 has no resource type 'google_compute_firewal'",
    ),
    "missing required argument": (
        "compute.tf", "machine_type = local.machine_type", "",
        "resource google_compute_instance.trainer: missing required argument 'machine_type'",
    ),
    "missing required nested argument": (
        "compute.tf", "seconds = max_run_duration.value", "",
        "resource google_compute_instance.trainer.scheduling.max_run_duration: "
        "missing required argument 'seconds'",
    ),
    "block written as an argument": (
        "storage.tf", "versioning {", "versioning = {",
        "resource google_storage_bucket.artifacts: 'versioning' is a block, written as an argument",
    ),
    "attribute the resource lacks": (
        "outputs.tf", "google_service_account.trainer.email", "google_service_account.trainer.emial",
        "google_service_account.trainer has no attribute 'emial'",
    ),
    "undeclared variable": (
        "compute.tf", "var.data_disk_device_name", "var.data_disk_device",
        "reference to undeclared variable var.data_disk_device",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_schema_check_catches_a_broken_module(schema, parsed, mutation):
    filename, old, new, problem = MUTATIONS[mutation]
    text = (INFRA / filename).read_text()
    assert old in text, f"{filename} no longer holds {old!r}: update the mutation"
    files = dict(parsed)
    files[filename] = parse(text.replace(old, new, 1))
    assert check_module(schema, Module(list(files.values()))) == [problem]


def tftest_problems(schema: ProviderSchema, module: Module, text: str) -> list[str]:
    """What `terraform test` would reject in a test file's references (it cannot run here)."""
    texts = strings(parse(text))
    problems = check_attribute_paths(schema, texts)
    for found in texts:
        for rtype, name in re.findall(r"(?<![\w.])(google_\w+)\.(\w+)", found):
            if (rtype, name) not in module.resources:
                problems.append(f"undeclared resource {rtype}.{name}")
        problems += [
            f"undeclared output {o}" for o in re.findall(r"\boutput\.(\w+)", found) if o not in module.outputs
        ]
        problems += [
            f"undeclared variable {v}"
            for v in re.findall(r"\bvar\.(\w+)", found)
            if v not in module.variables
        ]
    return sorted(set(problems))


def test_terraform_test_files_refer_to_real_resources_attributes_and_outputs(schema, module):
    for path in sorted((INFRA / "tests").glob("*.tftest.hcl")):
        assert tftest_problems(schema, module, path.read_text()) == [], path.name
    text = (INFRA / "tests" / "validation.tftest.hcl").read_text()
    assert "max_run_duration[0].seconds ==" in text
    broken = text.replace("max_run_duration[0].seconds ==", "max_run_duration[0].secnds ==", 1)
    assert tftest_problems(schema, module, broken) == [
        "google_compute_instance.trainer.scheduling.max_run_duration has no attribute 'secnds'"
    ]


def test_every_resource_that_takes_labels_gets_the_common_labels(schema, module):
    missing = []
    for (rtype, name), body in module.resources.items():
        if (
            "labels" in schema.block(schema.resources[rtype]).fields
            and expr(body.get("labels")) != "local.labels"
        ):
            missing.append(f"{rtype}.{name}")
    assert not missing, f"labels = local.labels missing on {missing}"
    assert expr(block(block(resource(module, "google_compute_instance", "trainer"), "boot_disk"),
                      "initialize_params")["labels"]) == "local.labels"  # fmt: skip


# ---- checkov -----------------------------------------------------------------------------------


def checkov(*args: str, cwd: Path = ROOT) -> dict[str, Any]:
    done = subprocess.run(
        [tool("checkov"), "--framework", "terraform", "--skip-download", "-o", "json", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def skipped_checks() -> dict[str, str]:
    """The skip-check entries of infra/.checkov.yaml with the comment above each (its reason)."""
    skips, reason = {}, []
    for line in (INFRA / ".checkov.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            reason.append(stripped.lstrip("# "))
        elif match := re.fullmatch(r"- (CKV\w+)", stripped):
            skips[match.group(1)] = " ".join(reason)
            reason = []
        else:
            reason = []
    return skips


def test_checkov_passes_with_the_listed_skips():
    report = checkov("--config-file", str(INFRA / ".checkov.yaml"), "-d", str(INFRA))
    summary = report["summary"]
    assert summary["failed"] == 0, [c["check_id"] for c in report["results"].get("failed_checks", [])]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 30 and summary["resource_count"] >= 10, summary


def test_each_checkov_skip_has_a_reason_and_is_needed(tmp_path):
    skips = skipped_checks()
    assert skips and all(len(reason) > 40 for reason in skips.values()), skips
    for path in module_paths():
        shutil.copy(path, tmp_path / path.name)
    report = checkov("-d", str(tmp_path), cwd=tmp_path)  # no config: nothing skipped
    failed = {c["check_id"] for c in report["results"].get("failed_checks", [])}
    assert failed == set(skips), f"failing without skips: {sorted(failed)}; skipped: {sorted(skips)}"


# ---- terraform init / validate / test with the stand-in google provider ------------------------


@pytest.fixture(scope="module")
def initialized(stand_in_google, tmp_path_factory) -> Terraform:
    tf = stand_in_google.terraform(tmp_path_factory.mktemp("infra"))
    tf.init()
    return tf


def test_terraform_init_installs_google_6_50_from_the_mirror_only(initialized):
    lock = (initialized.workdir / ".terraform.lock.hcl").read_text()
    assert 'provider "registry.terraform.io/hashicorp/google"' in lock
    assert re.search(r'version\s+=\s+"6\.50\.0"', lock), lock
    assert initialized.env["CHECKPOINT_DISABLE"] == "1" and "TF_PLUGIN_CACHE_DIR" not in initialized.env
    assert "filesystem_mirror" in Path(initialized.env["TF_CLI_CONFIG_FILE"]).read_text()


def test_terraform_validate(initialized):
    done = initialized.validate()
    assert "Success! The configuration is valid." in done.stdout


def tftest_runs() -> dict[str, list[str]]:
    return {
        path.name: re.findall(r'^run "(\w+)"', path.read_text(), flags=re.M)
        for path in sorted((INFRA / "tests").glob("*.tftest.hcl"))
    }


@pytest.mark.slow
def test_terraform_test_runs_every_test_file_and_every_run(initialized):
    done = initialized.test()
    runs = tftest_runs()
    for name, names in runs.items():
        assert f"tests/{name}... pass" in done.stdout, done.stdout[-3000:]
        for run in names:
            assert f'run "{run}"... pass' in done.stdout, run
    total = sum(len(names) for names in runs.values())
    assert total >= 30 and f"Success! {total} passed, 0 failed." in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_terraform_test_fails_a_run_whose_assertion_is_wrong(stand_in_google, tmp_path):
    tf = stand_in_google.terraform(tmp_path)
    path = tmp_path / "tests" / "scheduling.tftest.hcl"
    text = path.read_text()
    assert "max_run_duration[0].seconds == 5400" in text
    path.write_text(
        text.replace("max_run_duration[0].seconds == 5400", "max_run_duration[0].seconds == 5401")
    )
    tf.init()
    done = tf.test("-filter=tests/scheduling.tftest.hcl", check=False)
    assert done.returncode == 1
    assert 'run "max_run_duration_in_seconds"... fail' in done.stdout
    assert 'run "spot_switches_provisioning_and_restart"... pass' in done.stdout
    assert "1.5 h is 5400 s" in done.stderr


def _without_block(text: str, header: str) -> str:
    """`text` without the two-space-indented block that starts with `header`."""
    start = text.index(header)
    end = text.index("\n  }\n", start) + len("\n  }\n")
    return text[:start] + text[end:]


# name -> (file, old, new, what terraform says): mistakes `terraform validate` must refuse.
PLANTED = {
    "wrong attribute type": (
        "compute.tf", "device_name = var.data_disk_device_name", "device_name = [var.data_disk_device_name]",
        "Incorrect attribute value type",
    ),
    "missing required block": (
        "compute.tf", "  boot_disk {", None, 'Insufficient boot_disk blocks',
    ),
    "missing required argument": (
        "compute.tf", "machine_type = local.machine_type", "", 'The argument "machine_type" is required',
    ),
    "bad reference": (
        "compute.tf", "google_compute_subnetwork.trainer.id", "google_compute_subnetwork.trainr.id",
        "Reference to undeclared resource",
    ),
    "attribute the resource lacks": (
        "outputs.tf", "google_service_account.trainer.email", "google_service_account.trainer.emial",
        "Unsupported attribute",
    ),
    "misspelled argument": (
        "storage.tf", "force_destroy = var.force_destroy", "force_destory = var.force_destroy",
        'An argument named "force_destory" is not expected here',
    ),
    "block written as an argument": (
        "storage.tf", "versioning {", "versioning = {", 'An argument named "versioning" is not expected here',
    ),
    "unknown resource type": (
        "network.tf", 'resource "google_compute_firewall" "ssh"', 'resource "google_compute_firewal" "ssh"',
        'The provider hashicorp/google does not support resource type "google_compute_firewal"',
    ),
    "a set indexed like a list": (
        "outputs.tf", "value       = local.zone",
        "value       = google_compute_firewall.ssh.source_ranges[0]", "Invalid index",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mistake", list(PLANTED), ids=list(PLANTED))
def test_terraform_validate_refuses_a_planted_mistake(stand_in_google, tmp_path, mistake):
    filename, old, new, message = PLANTED[mistake]
    tf = stand_in_google.terraform(tmp_path)
    text = (tmp_path / filename).read_text()
    assert old in text, f"{filename} no longer holds {old!r}: update the planted mistake"
    (tmp_path / filename).write_text(_without_block(text, old) if new is None else text.replace(old, new, 1))
    tf.init()
    done = tf.validate(check=False)
    assert done.returncode == 1, done.stdout
    assert message in " ".join(done.stderr.split()), done.stderr


# ---- make verbs: one-line errors for user mistakes (real make, real terraform) -----------------


_SHADOWS: dict[tuple[str, ...], str] = {}


def path_without(*names: str) -> str:
    """PATH with `names` missing: a folder that holds one is replaced by a shadow folder that links
    everything else it holds (gcloud may live in /usr/bin beside bash)."""
    key = tuple(sorted(names))
    if key not in _SHADOWS:
        shadow_root = Path(tempfile.mkdtemp(prefix="path-without-"))
        folders = []
        for index, folder in enumerate(d for d in os.environ.get("PATH", "").split(os.pathsep) if d):
            here = Path(folder)
            if not any((here / n).exists() for n in names):
                folders.append(folder)
                continue
            shadow = shadow_root / str(index)
            shadow.mkdir()
            for entry in here.iterdir():
                if entry.name not in names:
                    (shadow / entry.name).symlink_to(entry)
            folders.append(str(shadow))
        _SHADOWS[key] = os.pathsep.join(folders)
    return _SHADOWS[key]


def make(*args: str, path: str | None = None, env: dict[str, str] | None = None):
    require(shutil.which("make"), "make is not installed")
    full_env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    full_env["PATH"] = path if path is not None else path_without("gcloud")
    full_env.update(env or {})
    return subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True, text=True, env=full_env, timeout=120,
    )  # fmt: skip


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def tfvars(tmp_path) -> Path:
    path = tmp_path / "terraform.tfvars"
    shutil.copy(INFRA / "terraform.tfvars.example", path)
    return path


@pytest.fixture
def ssh_key(tmp_path) -> Path:
    key = tmp_path / "id_test"
    key.write_text("not a real key\n")
    return key


def test_infra_up_without_tfvars_says_how_to_make_them(tmp_path):
    tool("terraform")
    missing = tmp_path / "terraform.tfvars"
    done = make("infra-up", f"TFVARS={missing}")
    assert done.returncode != 0
    assert error_lines(done) == [
        f"error: {missing} not found: cp infra/terraform.tfvars.example {missing} "
        "and set project_id and ssh_source_ranges"
    ]


def test_infra_plan_without_gcloud_or_a_key_file_says_how_to_log_in(tfvars):
    tool("terraform")
    done = make("infra-plan", f"TFVARS={tfvars}")
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith("error: no Google Cloud credentials: install the gcloud CLI")
    assert "gcloud auth application-default login" in line


def test_infra_up_with_a_missing_credentials_file_names_it(tfvars, ssh_key, tmp_path):
    tool("terraform")
    missing = tmp_path / "key.json"
    done = make("infra-up", f"TFVARS={tfvars}", f"SSH_KEY={ssh_key}",
                env={"GOOGLE_APPLICATION_CREDENTIALS": str(missing)})  # fmt: skip
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith(f"error: GOOGLE_APPLICATION_CREDENTIALS={missing} does not exist")


def test_gcloud_without_application_default_credentials_says_to_log_in(tfvars, ssh_key, tmp_path):
    tool("terraform")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"  # a gcloud that has no application-default credentials
    gcloud.write_text(
        "#!/bin/sh\necho 'ERROR: (gcloud.auth.application-default) no credentials' >&2\nexit 1\n"
    )
    gcloud.chmod(0o755)
    done = make("train-cloud", f"TFVARS={tfvars}", f"SSH_KEY={ssh_key}",
                path=f"{bin_dir}{os.pathsep}{path_without('gcloud')}")  # fmt: skip
    assert done.returncode != 0
    assert error_lines(done) == [
        "error: gcloud has no application-default credentials: run 'gcloud auth application-default login'"
    ]


def test_infra_up_without_terraform_says_so(tfvars):
    done = make("infra-up", f"TFVARS={tfvars}", path=path_without("terraform", "gcloud"))
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith("error: terraform is not installed")


def test_infra_up_without_an_ssh_key_says_how_to_make_one(tfvars, tmp_path):
    tool("terraform")
    creds = tmp_path / "key.json"
    creds.write_text("{}")
    missing = tmp_path / "id_none"
    done = make("infra-up", f"TFVARS={tfvars}", f"SSH_KEY={missing}",
                env={"GOOGLE_APPLICATION_CREDENTIALS": str(creds)})  # fmt: skip
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith(f"error: SSH key {missing} not found")


def test_fetch_without_a_run_name_asks_for_one():
    done = make("fetch")
    assert done.returncode != 0
    assert error_lines(done) == ["error: which run? make fetch RUN=<run name> (make runs lists them)"]


def test_ssh_before_infra_up_says_to_run_it(tmp_path, ssh_key):
    tool("terraform")
    work = tmp_path / "infra"
    work.mkdir()
    for path in module_paths():
        shutil.copy(path, work / path.name)
    inventory = tmp_path / "hosts.yml"  # the cloud verbs read the VM from the inventory infra-up writes
    done = make("ssh", f"INFRA_DIR={work}", f"SSH_KEY={ssh_key}", f"INVENTORY={inventory}")
    assert done.returncode != 0
    assert error_lines(done) == [
        f"error: no inventory at {inventory}: run `make infra-up` "
        "(or `make inventory` after a terraform apply)"
    ]


def write_state(folder: Path, force_destroy: bool) -> None:
    def entry(rtype: str, name: str, *keys: Any) -> dict[str, Any]:
        instances = [
            {"schema_version": 0, "attributes": {}, "sensitive_attributes": []} for _ in keys or [None]
        ]
        for instance, key in zip(instances, keys, strict=False):
            instance["index_key"] = key
        return {"mode": "managed", "type": rtype, "name": name, "instances": instances,
                "provider": 'provider["registry.terraform.io/hashicorp/google"]'}  # fmt: skip

    state = {
        "version": 4, "terraform_version": "1.11.0", "serial": 1,
        "lineage": "3f1c0c8e-0000-4000-8000-000000000000",
        "outputs": {"bucket_force_destroy": {"value": force_destroy, "type": "bool"}},
        "resources": [
            entry("google_project_service", "apis", "compute.googleapis.com", "storage.googleapis.com"),
            entry("google_storage_bucket", "artifacts"),
            entry("google_storage_bucket_iam_member", "trainer_objects"),
            entry("google_storage_bucket_iam_member", "data_read", "other-bucket", "shared-data"),
            entry("google_service_account", "trainer"),
            entry("google_compute_network", "trainer"),
            entry("google_compute_disk", "data", 0, 1),
            entry("google_compute_instance", "trainer", 0, 1),
        ],
        "check_results": None,
    }  # fmt: skip
    (folder / "terraform.tfstate").write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("force_destroy", "keep_disk", "kept"),
    [
        (False, "", {"google_storage_bucket.artifacts"}),
        (False, "1", {"google_storage_bucket.artifacts", "google_compute_disk.data"}),
        (True, "", set()),
    ],
)
def test_infra_down_keeps_the_bucket_unless_force_destroy(tmp_path, force_destroy, keep_disk, kept):
    terraform = tool("terraform")
    for path in module_paths():
        shutil.copy(path, tmp_path / path.name)
    write_state(tmp_path, force_destroy)
    everything = {
        "google_storage_bucket.artifacts", "google_storage_bucket_iam_member.trainer_objects",
        "google_storage_bucket_iam_member.data_read", "google_service_account.trainer",
        "google_compute_network.trainer", "google_compute_disk.data", "google_compute_instance.trainer",
    }  # fmt: skip
    # The read grants on other buckets (data_read_buckets) name the service account: they go with it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")} | {"CHECKPOINT_DISABLE": "1"}
    ops_tf = OpsTerraform(tmp_path, tmp_path / "terraform.tfvars", terraform, env=env)
    targets, _ = ops_tf.down_targets(keep_data_disk=keep_disk == "1")
    # The APIs are never destroyed (disable_on_destroy = false makes it pointless, and the bucket
    # depends on them: a -target destroy takes dependents along).
    assert set(targets) == everything - kept
