"""The stand-in google provider process: Terraform's plugin protocol 6 served by the `tf` package.

Run by the executable that tests/standins/tf_harness.py puts into a filesystem mirror, with the .tools/
Python (the `tf` package needs protobuf < 6). `tf` does the plumbing: the go-plugin handshake, TLS,
gRPC, msgpack values with unknowns, diagnostics. Its resource model has no list-nested blocks and no
object types, which the google provider's schema is full of, so this servicer answers the protocol's
calls itself from the schema file that schema.py generated (TRAINER_STANDIN_GOOGLE_SCHEMA):

- GetProviderSchema: that schema, attribute by attribute and block by block.
- PlanResourceChange: create = the configuration with every computed attribute it leaves null
  unknown (plus the labels the provider computes at plan time); update = Terraform's proposed state,
  with `requires_replace` for replace-only arguments (values.REPLACED_BY, the schema's force_new and
  values.FORCE_NEW, the provider's ForceNew below the top level), so Terraform plans "must be replaced"
  and applies a delete, then a create;
  destroy = null.
- ApplyResourceChange: unknowns filled as GCP would (values.Answers, the cloud file's `values` rules
  first); a `create_error`/`delete_error` rule fails the call with GCP's message. The cloud file
  (cloud.py, TRAINER_STANDIN_GOOGLE_CLOUD) records what exists.
- ReadResource: the resource as the cloud file has it (gone when it is not there), so drift that a
  test makes is what a refresh sees.

Everything else the real provider does is out of its reach: see the package docstring.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import tf.provider
from tf.gen import tfplugin_pb2 as pb
from tf.runner import run_provider
from tf.types import Unknown
from tf.utils import Diagnostics, _to_attribute_path, read_dynamic_value, to_dynamic_value

from tests.standins.google_provider import values as v
from tests.standins.google_provider.cloud import CLOUD_ENV, StandInCloud
from tests.standins.google_provider.schema import SCHEMA_ENV

NESTING = {"single": pb.Schema.NestedBlock.SINGLE, "list": pb.Schema.NestedBlock.LIST,
           "set": pb.Schema.NestedBlock.SET}  # fmt: skip


def block_pb(block: dict[str, Any]) -> pb.Schema.Block:
    attributes = [
        pb.Schema.Attribute(
            name=name,
            type=json.dumps(spec["type"]).encode(),
            required=spec["required"],
            optional=spec["optional"],
            computed=spec["computed"],
        )
        for name, spec in sorted(block["attributes"].items())
    ]
    nested = [
        pb.Schema.NestedBlock(
            type_name=name,
            nesting=NESTING[spec["nesting"]],
            min_items=spec["min_items"],
            max_items=spec["max_items"],
            block=block_pb(spec["block"]),
        )
        for name, spec in sorted(block["block_types"].items())
    ]
    return pb.Schema.Block(attributes=attributes, block_types=nested)


def _fill(template: str, value: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(value.get(m.group(1), m.group(0))), template)


class StandInServicer(tf.provider.ProviderServicer):
    """The protocol's calls answered from the generated schema (see the module docstring)."""

    def __init__(self, app: Any):
        super().__init__(app)
        self.schema = json.loads(Path(os.environ[SCHEMA_ENV]).read_text())
        self.defaults: dict[str, str] = {}
        cloud = os.environ.get(CLOUD_ENV)
        self.cloud = StandInCloud(Path(cloud)) if cloud else None
        self.allocating = threading.Lock()  # parallel creates must not pick the same free address

    def block(self, type_name: str) -> dict[str, Any]:
        return self.schema["resources"][type_name]

    def decode(self, type_name: str, value: pb.DynamicValue) -> Any:
        decoded = read_dynamic_value(value)
        return v.normalize(decoded, self.block(type_name)) if isinstance(decoded, dict) else decoded

    # ---- schema and configuration ------------------------------------------------------------------

    def GetProviderSchema(self, request, context):
        return pb.GetProviderSchema.Response(
            provider=pb.Schema(block=block_pb(self.schema["provider"])),
            resource_schemas={n: pb.Schema(block=block_pb(b)) for n, b in self.schema["resources"].items()},
            data_source_schemas={
                n: pb.Schema(block=block_pb(b)) for n, b in self.schema["data_sources"].items()
            },
            provider_meta=pb.Schema(block=pb.Schema.Block()),
            server_capabilities=pb.ServerCapabilities(plan_destroy=True, get_provider_schema_optional=False),
        )

    def ValidateProviderConfig(self, request, context):
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request, context):
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request, context):
        return pb.ValidateDataResourceConfig.Response()

    def ConfigureProvider(self, request, context):
        config = read_dynamic_value(request.config) or {}
        self.defaults = {
            k: config[k] for k in ("project", "region", "zone") if isinstance(config.get(k), str)
        }
        return pb.ConfigureProvider.Response()

    # ---- resources ---------------------------------------------------------------------------------

    def answers(self, type_name: str, value: dict[str, Any]) -> v.Answers:
        return v.Answers(type_name, value, self.defaults, self.cloud or StandInCloud(Path(os.devnull)))

    def PlanResourceChange(self, request, context):
        type_name, block = request.type_name, self.block(request.type_name)
        prior = self.decode(type_name, request.prior_state)
        planned = self.decode(type_name, request.proposed_new_state)
        replace: list[v.Path] = []
        if planned is None:
            return pb.PlanResourceChange.Response(
                planned_state=to_dynamic_value(None), legacy_type_system=True
            )
        if prior is None:
            v.mark_unknown(planned, block, Unknown)
        else:
            replace = v.replaced_by(prior, planned, block, Unknown, v.FORCE_NEW.get(type_name, frozenset()))
            self.plan_restart(type_name, prior, planned, read_dynamic_value(request.config) or {})
        if "effective_labels" in planned and isinstance(planned.get("labels"), dict | type(None)):
            labels = {**(planned.get("labels") or {}), **v.ATTRIBUTION_LABEL}
            planned["effective_labels"] = planned["terraform_labels"] = labels
        return pb.PlanResourceChange.Response(
            planned_state=to_dynamic_value(planned),
            requires_replace=[
                _to_attribute_path([s if isinstance(s, str) else (s,) for s in p]) for p in replace
            ],
            legacy_type_system=True,
        )

    @staticmethod
    def plan_restart(type_name: str, prior: dict, planned: dict, config: dict) -> None:
        """A stopped VM whose desired_status is RUNNING starts again, with new ephemeral addresses."""
        desired = planned.get("desired_status")
        if type_name != "google_compute_instance" or not isinstance(desired, str):
            return
        if desired == prior.get("current_status"):
            return
        planned["current_status"] = Unknown
        if desired != "RUNNING":
            return
        for nic, nic_config in zip(
            planned["network_interface"], config.get("network_interface") or [], strict=False
        ):
            for access, access_config in zip(
                nic["access_config"], nic_config.get("access_config") or [], strict=False
            ):
                if access_config.get("nat_ip") is None:  # ephemeral: GCE hands out another one
                    access["nat_ip"] = Unknown

    def ApplyResourceChange(self, request, context):
        type_name, block = request.type_name, self.block(request.type_name)
        prior = self.decode(type_name, request.prior_state)
        planned = self.decode(type_name, request.planned_state)
        value = planned if planned is not None else prior
        answers = self.answers(type_name, value)
        kind = "create_error" if prior is None else "delete_error" if planned is None else ""
        errors = self.cloud.rules_for(type_name, value, kind) if self.cloud and kind else []
        if errors:  # nothing was created, or nothing was deleted
            diags = Diagnostics().add_error(_fill(errors[0], answers.fields()))
            return pb.ApplyResourceChange.Response(
                new_state=to_dynamic_value(prior), diagnostics=diags.to_pb(), legacy_type_system=True
            )
        if planned is None:
            if self.cloud:
                self.cloud.drop(type_name, prior.get("id") or answers.resource_id() or "")
            return pb.ApplyResourceChange.Response(new_state=to_dynamic_value(None), legacy_type_system=True)
        fixed = self.fixed_values(type_name, planned)
        if planned.get("current_status") is Unknown and planned.get("desired_status"):
            fixed.setdefault("current_status", planned["desired_status"])
        with self.allocating:
            v.fill_unknown(
                planned, block, Unknown, lambda path, obj: fixed.get(v.dotted(path), answers(path, obj))
            )
            if self.cloud and planned.get("id"):
                self.cloud.put(type_name, planned["id"], planned)
        return pb.ApplyResourceChange.Response(new_state=to_dynamic_value(planned), legacy_type_system=True)

    def fixed_values(self, type_name: str, value: dict[str, Any]) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        for rule in self.cloud.rules_for(type_name, value, "values") if self.cloud else []:
            fixed.update(rule)
        return fixed

    def ReadResource(self, request, context):
        type_name = request.type_name
        current = self.decode(type_name, request.current_state)
        if self.cloud and isinstance(current, dict) and current.get("id"):
            found = self.cloud.get(type_name, current["id"])
            current = v.normalize(copy.deepcopy(found), self.block(type_name)) if found is not None else None
        return pb.ReadResource.Response(new_state=to_dynamic_value(current), private=request.private)

    def UpgradeResourceState(self, request, context):
        state = json.loads(request.raw_state.json) if request.raw_state.json else None
        state = v.normalize(state, self.block(request.type_name)) if isinstance(state, dict) else state
        return pb.UpgradeResourceState.Response(upgraded_state=to_dynamic_value(state))

    def ImportResourceState(self, request, context):
        diags = Diagnostics().add_error(f"the stand-in google provider cannot import {request.type_name}")
        return pb.ImportResourceState.Response(diagnostics=diags.to_pb())

    def ReadDataSource(self, request, context):
        block = self.schema["data_sources"][request.type_name]
        state = v.normalize(read_dynamic_value(request.config), block)
        answers = self.answers(request.type_name, state)
        v.mark_unknown(state, block, Unknown)
        v.fill_unknown(state, block, Unknown, answers)
        return pb.ReadDataSource.Response(state=to_dynamic_value(state))


class _App:
    """What tf.runner asks of a provider object beyond the servicer."""

    @staticmethod
    def full_name() -> str:
        return "registry.terraform.io/hashicorp/google"


def main() -> None:
    # tf.runner builds `tf.provider.ProviderServicer(app)`: this servicer takes its place.
    tf.provider.ProviderServicer = StandInServicer  # type: ignore[misc]
    run_provider(_App(), sys.argv)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
