"""hashicorp/google 6.50.0's schema for the resources a module uses, read from the cdktf bindings.

The jsii tarball of `cdktf-cdktf-provider-google` 16.12.1 (`provider-google@16.12.1.jsii.tgz`, the file
that `.ci/services.d/30-google-schema.sh` caches) holds two things generated from the provider's own
`terraform providers schema -json`:

- `package/.jsii`: the assembly (`tests/infra/terraform_schema.py` reads it), which maps a Terraform type
  name to its class and that class to its source file;
- `package/lib/<name>/index.js`, whose source map carries the TypeScript it was compiled from. There,
  every attribute and block is written down with what the assembly lacks: a comment
  `// <name> - computed: <bool>, optional: <bool>, required: <bool>`, whether a collection is a list or
  a set and whether a field is a nested block (`synthesizeHclAttributes` / `<struct>ToHclTerraform`:
  `isBlock`, `type: "list" | "set" | "map" | "simple" | "struct"`), whether a block holds at most one
  item (one `OutputReference` instead of a `List` of them), and the descriptions, which say "Changing
  this forces a new resource to be created" for many replace-only arguments.

`generate()` turns that into the schema the stand-in provider serves (JSON, cty type notation):
`{"version", "provider": BLOCK, "resources": {type: BLOCK}, "data_sources": {type: BLOCK}}` with
`BLOCK = {"attributes": {name: {"type", "required", "optional", "computed", "force_new"}},
"block_types": {name: {"nesting": "list"|"set"|"single", "min_items", "max_items", "block": BLOCK}}}`.

What the bindings cannot say, and this schema therefore does not hold: a maximum number of blocks
other than one, a MinItems on an optional block, ForceNew on arguments whose description does not say
so, and the provider's own rules (value validation, ConflictsWith/ExactlyOneOf/AtLeastOneOf).
"""

from __future__ import annotations

import base64
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from tests.infra.terraform_schema import ProviderSchema, load_assembly

SCHEMA_ENV = "TRAINER_STANDIN_GOOGLE_SCHEMA"  # the generated schema file the provider process serves
_SOURCE_MAP = re.compile(r"sourceMappingURL=data:application/json;base64,(\S+)")
_DECLARATION = re.compile(r"^export (?:abstract )?(class|interface|function) (\w+)", re.M)
_FLAGS = re.compile(
    r"^  // (\w+) - computed: (\w+), optional: (\w+), required: (\w+)\n((?:  .*\n){1,3})", re.M
)
_HCL_ENTRY = re.compile(
    r"^\s+(\w+): \{\n\s+value: (.+),\n\s+isBlock: (true|false),\n\s+type: \"(\w+)\",\n"
    r"\s+storageClassType: \"(\w+)\",",
    re.M,
)
_INTERFACE_FIELD = re.compile(r"/\*\*((?:(?!\*/).)*)\*/\s*readonly (\w+)(\??):", re.S)
_DOC_NAME = re.compile(r"#(\w+) \w+#\w+\}")
_FORCES_NEW = re.compile(r"forces? (?:a )?new resource|forces recreation|requires? recreation", re.I)

SCALARS = {"string": "string", "number": "number", "boolean": "bool"}
GETTERS = {
    "getStringAttribute": "string",
    "getNumberAttribute": "number",
    "getBooleanAttribute": "bool",
    "getListAttribute": ["list", "string"],
    "getNumberListAttribute": ["list", "number"],
}
MAP_CLASSES = {
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
    "cdktf.StringMapList": ["list", ["map", "string"]],
}


class SchemaError(Exception):
    """The bindings hold something this reader does not understand (a newer cdktf layout)."""


def _typescript(js: str, where: str) -> str:
    match = _SOURCE_MAP.search(js)
    if not match:
        raise SchemaError(f"{where}: no inline source map with the TypeScript source")
    return json.loads(base64.b64decode(match.group(1)))["sourcesContent"][0]


class _SourceFile:
    """One generated TypeScript file: its classes, interfaces and `...ToHclTerraform` functions."""

    def __init__(self, ts: str):
        starts = list(_DECLARATION.finditer(ts))
        self.decls: dict[tuple[str, str], str] = {}
        for here, following in zip(starts, [*starts[1:], None], strict=True):
            end = following.start() if following else len(ts)
            self.decls[(here.group(1), here.group(2))] = ts[here.start() : end]

    def hcl_entries(self, struct: str, is_root: bool) -> dict[str, dict[str, Any]]:
        """The configurable fields of a struct: {tf_name: {value, is_block, type, storage}}."""
        if is_root:
            body = self.decls.get(("class", struct), "")
            body = body[body.find("synthesizeHclAttributes") :]
        else:
            body = self.decls.get(("function", struct[0].lower() + struct[1:] + "ToHclTerraform"), "")
        return {
            name: {"value": value, "is_block": block == "true", "type": kind, "storage": storage}
            for name, value, block, kind, storage in _HCL_ENTRY.findall(body)
        }

    def interface_fields(self, interface: str) -> dict[str, tuple[bool, bool]]:
        """{tf_name: (optional, force_new)} from the struct's interface and its field docs."""
        found = {}
        for doc, _camel, optional in _INTERFACE_FIELD.findall(self.decls.get(("interface", interface), "")):
            match = _DOC_NAME.search(doc)
            if match:
                found[match.group(1)] = (optional == "?", bool(_FORCES_NEW.search(" ".join(doc.split()))))
        return found

    def flags(self, cls: str) -> dict[str, tuple[bool, bool, bool, str]]:
        """{tf_name: (computed, optional, required, the declaration lines after the comment)}."""
        body = self.decls.get(("class", cls), "")
        return {
            name: (c == "true", o == "true", r == "true", rest)
            for name, c, o, r, rest in _FLAGS.findall(body)
        }


class _Builder:
    def __init__(self, source: _SourceFile, where: str):
        self.source, self.where = source, where

    def block(self, struct: str, is_root: bool, cls: str, interface: str) -> dict[str, Any]:
        entries = self.source.hcl_entries(struct, is_root)
        flags = self.source.flags(cls)
        declared = self.source.interface_fields(interface)
        attributes: dict[str, Any] = {}
        blocks: dict[str, Any] = {}
        for name, entry in entries.items():
            optional_in_interface, force_new = declared.get(name, (True, False))
            computed, optional, required, _ = flags.get(name, (False, optional_in_interface, False, ""))
            if name not in flags:
                required = not optional_in_interface
            if entry["is_block"]:
                blocks[name] = self._nested(name, entry, required)
            else:
                attributes[name] = {
                    "type": self._configurable_type(name, entry),
                    "required": required,
                    "optional": optional,
                    "computed": computed,
                    "force_new": force_new,
                }
        for name, (computed, optional, required, rest) in flags.items():
            if name in entries:
                continue
            if not computed or optional or required:
                raise SchemaError(f"{self.where}: {cls}.{name} is configurable but has no HCL entry")
            attributes[name] = {
                "type": self._computed_type(name, rest),
                "required": False,
                "optional": False,
                "computed": True,
                "force_new": False,
            }
        return {"attributes": attributes, "block_types": blocks}

    def _configurable_type(self, name: str, entry: dict[str, Any]) -> Any:
        storage, kind = entry["storage"], entry["type"]
        if kind == "simple" and storage in SCALARS:
            return SCALARS[storage]
        element = re.fullmatch(r"(string|number|boolean)(List|Map)", storage)
        if element and kind in ("list", "set", "map"):
            return [kind, SCALARS[element.group(1)]]
        raise SchemaError(f"{self.where}: {name}: unsupported attribute storage {kind}/{storage}")

    def _computed_type(self, name: str, declaration: str) -> Any:
        getter = re.search(r"return (cdktf\.\w+\.\w+\()?(cdktf\.Fn\.tolist\()?this\.(\w+)\(", declaration)
        if getter and getter.group(3) in GETTERS:
            kind = GETTERS[getter.group(3)]
            return ["set", kind[1]] if getter.group(2) and isinstance(kind, list) else kind
        made = re.search(r"private _\w+ = new ([\w.]+)\(this, \"\w+\"(?:, (true|false))?\)", declaration)
        if made and made.group(1) in MAP_CLASSES:
            return MAP_CLASSES[made.group(1)]
        if made and made.group(1).endswith("List"):
            element = made.group(1)[: -len("List")]
            nested = self.block(element, False, element + "OutputReference", element)
            if nested["block_types"]:
                raise SchemaError(f"{self.where}: computed {name} holds blocks")
            kind = "set" if made.group(2) == "true" else "list"
            return [kind, ["object", {k: v["type"] for k, v in nested["attributes"].items()}]]
        if made and made.group(1).endswith("OutputReference"):
            element = made.group(1)[: -len("OutputReference")]
            nested = self.block(element, False, made.group(1), element)
            return ["list", ["object", {k: v["type"] for k, v in nested["attributes"].items()}]]
        raise SchemaError(
            f"{self.where}: {name}: cannot tell the type of a computed attribute from {declaration!r}"
        )

    def _nested(self, name: str, entry: dict[str, Any], required: bool) -> dict[str, Any]:
        storage = entry["storage"]
        if entry["type"] == "struct":
            nesting, element, max_items = "single", storage, 0
        elif entry["type"] in ("list", "set"):
            nesting = entry["type"]
            element = storage[: -len("List")] if storage.endswith("List") else storage
            max_items = 0 if entry["value"].startswith("cdktf.listMapperHcl(") else 1
        else:
            raise SchemaError(f"{self.where}: block {name}: unsupported nesting {entry['type']}")
        inner = self.block(element, False, element + "OutputReference", element)
        min_items = 1 if required and nesting != "single" else 0
        return {"nesting": nesting, "min_items": min_items, "max_items": max_items, "block": inner}


def _class_name(fqn: str) -> str:
    return fqn.rsplit(".", 1)[1]


def generate(tgz: Path, resources: set[str], data_sources: set[str] = frozenset()) -> dict[str, Any]:
    """The provider schema for `resources` and `data_sources` (those 6.50.0 lacks are left out)."""
    assembly = load_assembly(tgz)
    schema = ProviderSchema(assembly)
    files: dict[str, list[tuple[str, str, str]]] = {}
    classes = schema.classes
    data_classes = {name: fqn.removesuffix("Config") for name, fqn in schema.data_sources.items()}
    provider_fqn = schema.provider.removesuffix("Config")
    picks = [("provider", "provider", provider_fqn)]
    picks += [("resources", n, classes[n]) for n in sorted(resources) if n in classes]
    picks += [("data_sources", n, data_classes[n]) for n in sorted(data_sources) if n in data_classes]
    for kind, name, fqn in picks:
        filename = assembly["types"][fqn]["locationInModule"]["filename"]
        member = "package/lib/" + filename.removeprefix("src/").removesuffix(".ts") + ".js"
        files.setdefault(member, []).append((kind, name, fqn))
    out: dict[str, Any] = {"version": schema.version, "provider": {}, "resources": {}, "data_sources": {}}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if member.name not in files:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                raise SchemaError(f"{member.name}: not a file in {tgz}")
            source = _SourceFile(_typescript(handle.read().decode(), member.name))
            for kind, name, fqn in files[member.name]:
                cls = _class_name(fqn)
                block = _Builder(source, member.name).block(cls, True, cls, cls + "Config")
                if kind == "provider":
                    out["provider"] = block
                else:
                    out[kind][name] = block
    missing = [n for k, n, _ in picks if k != "provider" and n not in out[k]]
    if missing or not out["provider"]:
        raise SchemaError(f"{tgz}: no generated source for {missing or 'the provider'}")
    return out


_TYPES_IN_MODULE = re.compile(r'^\s*(resource|data)\s+"(google_\w+)"', re.M)


def module_types(folder: Path) -> tuple[set[str], set[str]]:
    """The resource and data source types the .tf files in `folder` declare."""
    resources, data = set(), set()
    for path in sorted(folder.glob("*.tf")):
        for kind, name in _TYPES_IN_MODULE.findall(path.read_text()):
            (resources if kind == "resource" else data).add(name)
    return resources, data
