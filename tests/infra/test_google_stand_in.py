"""The stand-in google provider's schema (tests/standins/google_provider/schema.py) against what is known.

It is generated from the cdktf bindings of hashicorp/google 6.50.0; these tests pin facts of the real
provider's schema that the module depends on, and check that every argument the bindings' jsii
assembly lists (tests/infra/terraform_schema.py, an independent reading) is in it with the same
required flag.
"""

from __future__ import annotations

import json

import pytest

from tests.infra.terraform_schema import ProviderSchema
from tests.standins.google_provider.schema import module_types
from tests.standins.tf_harness import INFRA, schema_tarball

pytestmark = pytest.mark.terraform


@pytest.fixture(scope="module")
def generated(stand_in_google) -> dict:
    return json.loads(stand_in_google.schema_file.read_text())


def test_generated_schema_covers_the_module_and_is_6_50(generated):
    resources, _ = module_types(INFRA)
    assert generated["version"] == "6.50.0"
    assert set(generated["resources"]) == resources and len(resources) >= 10
    assert {"project", "region", "zone"} <= set(generated["provider"]["attributes"])


def test_generated_schema_knows_nesting_sets_and_computed_values(generated):
    vm = generated["resources"]["google_compute_instance"]
    blocks = vm["block_types"]
    boot = blocks["boot_disk"]
    assert (boot["nesting"], boot["min_items"], boot["max_items"]) == ("list", 1, 1)
    assert (blocks["network_interface"]["min_items"], blocks["network_interface"]["max_items"]) == (1, 0)
    assert blocks["scheduling"]["block"]["block_types"]["node_affinities"]["nesting"] == "set"
    assert blocks["timeouts"]["nesting"] == "single"
    access = blocks["network_interface"]["block"]["block_types"]["access_config"]["block"]["attributes"]
    assert access["nat_ip"] | {"optional": True, "computed": True} == access["nat_ip"]
    assert vm["attributes"]["tags"]["type"] == ["set", "string"]
    assert vm["attributes"]["metadata"]["type"] == ["map", "string"]
    assert vm["attributes"]["current_status"] == {
        "type": "string", "required": False, "optional": False, "computed": True, "force_new": False,
    }  # fmt: skip
    assert vm["attributes"]["hostname"]["force_new"] is True  # "Changing this forces a new resource"
    firewall = generated["resources"]["google_compute_firewall"]
    assert firewall["attributes"]["source_ranges"]["type"] == ["set", "string"]
    assert firewall["block_types"]["allow"]["nesting"] == "set"
    bucket = generated["resources"]["google_storage_bucket"]["attributes"]
    assert bucket["url"]["computed"] and not bucket["url"]["optional"]
    assert bucket["location"]["required"] and bucket["force_destroy"]["type"] == "bool"


def test_every_argument_of_the_assembly_is_in_the_generated_schema_with_its_required_flag(generated):
    assembly = ProviderSchema.load(schema_tarball())
    problems = []

    def compare(fqn: str, block: dict, where: str) -> None:
        for name, spec in assembly.block(fqn).fields.items():
            fields = {**block["attributes"], **block["block_types"]}
            if name not in fields:
                problems.append(f"{where}.{name}: missing")
                continue
            if spec.block:
                if name not in block["block_types"]:
                    problems.append(f"{where}.{name}: a block in the assembly, an attribute here")
                    continue
                nested = block["block_types"][name]
                if spec.required != (nested["min_items"] > 0):
                    problems.append(
                        f"{where}.{name}: required {spec.required}, min_items {nested['min_items']}"
                    )
                compare(spec.block, nested["block"], f"{where}.{name}")
            elif spec.required != block["attributes"].get(name, {}).get("required"):
                problems.append(f"{where}.{name}: required differs")

    for rtype, block in generated["resources"].items():
        compare(assembly.resources[rtype], block, rtype)
    assert problems == []
