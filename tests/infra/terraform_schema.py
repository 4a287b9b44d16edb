"""The google provider's schema, read from its cdktf bindings, and a checker of a Terraform module.

`terraform validate` needs the provider binary, which cannot be installed offline. The PyPI package
`cdktf-cdktf-provider-google` 16.12.1 carries the whole schema of hashicorp/google 6.50.0 in its jsii
assembly (`_jsii/provider-google@16.12.1.jsii.tgz` -> `package/.jsii`, JSON): one `<Name>Config`
interface per resource with every argument (camelCase, `optional` flag, the Terraform name in the
docs link) and one interface per nested block. `check_module` walks a module parsed by python-hcl2
and reports every resource type, block or argument the provider does not have, every required
argument or block that is missing, and every reference to an undeclared variable, local or resource.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASSEMBLY = "@cdktf/provider-google"
_REPRESENTS = re.compile(
    r"Represents a \{@link https://registry\.terraform\.io/providers/hashicorp/google/([0-9.]+)/docs"
    r"(?:/(resources|data-sources)/\w+)? (google\w*)\}"
)
_DOC_LINK = re.compile(r"#(\w+) \w+#\w+\}")
META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def load_assembly(path: Path) -> dict[str, Any]:
    """The jsii assembly as JSON, from the `.jsii` file, the `.jsii.tgz`, or the wheel holding it."""
    path = Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            return _from_tgz(io.BytesIO(wheel.read(member)))
    if path.name.endswith((".tgz", ".tar.gz")):
        with path.open("rb") as handle:
            return _from_tgz(handle)
    return json.loads(path.read_bytes())


def _from_tgz(fileobj: Any) -> dict[str, Any]:
    with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        member = tar.extractfile("package/.jsii")
        if member is None:
            raise ValueError("package/.jsii missing from the jsii tarball")
        return json.loads(member.read())


@dataclass
class Field:
    name: str
    required: bool
    block: str | None  # fqn of the nested block's interface; None for a plain argument


@dataclass
class Block:
    fqn: str
    fields: dict[str, Field] = field(default_factory=dict)


class ProviderSchema:
    def __init__(self, assembly: dict[str, Any]):
        self.types: dict[str, Any] = assembly["types"]
        self.version = ""
        self.resources: dict[str, str] = {}  # google_x -> fqn of its Config interface
        self.data_sources: dict[str, str] = {}
        self.provider = ""
        self.classes: dict[str, str] = {}  # google_x (resource) -> fqn of its class
        for fqn, spec in self.types.items():
            if spec["kind"] != "class":
                continue
            match = _REPRESENTS.search(spec.get("docs", {}).get("summary", ""))
            if not match:
                continue
            self.version, kind, tf_name = match.groups()
            config = fqn + "Config"
            if kind == "resources":
                self.resources[tf_name] = config
                self.classes[tf_name] = fqn
            elif kind == "data-sources":
                self.data_sources[tf_name] = config
            else:
                self.provider = config
        self._blocks: dict[str, Block] = {}
        self._attribute_names: dict[str, set[str]] = {}

    @classmethod
    def load(cls, path: Path) -> ProviderSchema:
        return cls(load_assembly(path))

    def block(self, fqn: str) -> Block:
        if fqn not in self._blocks:
            block = Block(fqn)
            for prop in self.types[fqn].get("properties", []):
                match = _DOC_LINK.search(json.dumps(prop.get("docs", {})))
                name = match.group(1) if match else _snake(prop["name"])
                block.fields[name] = Field(name, not prop.get("optional", False), self._nested(prop["type"]))
            self._blocks[fqn] = block
        return self._blocks[fqn]

    def _nested(self, type_ref: dict[str, Any]) -> str | None:
        """The fqn of a nested block interface inside a property type, if the property is a block."""
        if "fqn" in type_ref:
            spec = self.types.get(type_ref["fqn"])
            if spec and spec["kind"] == "interface" and spec.get("datatype"):
                return type_ref["fqn"]
            return None
        if "collection" in type_ref:
            return self._nested(type_ref["collection"]["elementtype"])
        for member in type_ref.get("union", {}).get("types", []):
            found = self._nested(member)
            if found:
                return found
        return None

    def computed(self, block_fqn: str) -> set[str]:
        """Read-only attributes of a nested block (the getters of its OutputReference class)."""
        spec = self.types.get(block_fqn + "OutputReference", {})
        return {_snake(p["name"]) for p in spec.get("properties", []) if not p.get("static")}

    def attributes(self, resource_type: str) -> set[str]:
        """Every attribute a resource exposes (arguments and computed ones), in snake_case."""
        if resource_type not in self._attribute_names:
            spec = self.types[self.classes[resource_type]]
            names = {_snake(p["name"]) for p in spec.get("properties", []) if not p.get("static")}
            names |= set(self.block(self.resources[resource_type]).fields)
            self._attribute_names[resource_type] = names
        return self._attribute_names[resource_type]


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _labelled(section: list[dict[str, Any]], depth: int) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """hcl2's `[{"\"type\"": {"\"name\"": body}}]` -> [(("type", "name"), body)]."""
    found: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def walk(node: dict[str, Any], labels: tuple[str, ...]) -> None:
        for key, value in node.items():
            if key.startswith("__"):
                continue
            if len(labels) + 1 == depth:
                found.append(((*labels, _unquote(key)), value))
            else:
                walk(value, (*labels, _unquote(key)))

    for item in section:
        walk(item, ())
    return found


@dataclass
class Module:
    """The parts of a parsed module (a list of hcl2 dicts, one per file) the checker needs."""

    files: list[dict[str, Any]]

    def section(self, name: str, depth: int) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        found = []
        for parsed in self.files:
            found += _labelled(parsed.get(name, []), depth)
        return found

    @property
    def resources(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {labels: body for labels, body in self.section("resource", 2)}  # type: ignore[misc]

    @property
    def data(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {labels: body for labels, body in self.section("data", 2)}  # type: ignore[misc]

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {labels[0]: body for labels, body in self.section("variable", 1)}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {labels[0]: body for labels, body in self.section("output", 1)}

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for parsed in self.files:
            for block in parsed.get("locals", []):
                merged.update({k: v for k, v in block.items() if not k.startswith("__")})
        return merged

    @property
    def providers(self) -> dict[str, dict[str, Any]]:
        return {labels[0]: body for labels, body in self.section("provider", 1)}


def _check_body(
    schema: ProviderSchema, block: Block, body: dict[str, Any], where: str, top: bool
) -> list[str]:
    problems: list[str] = []
    present: set[str] = set()
    for key, value in body.items():
        if key.startswith("__") or (top and key in META_ARGUMENTS):
            continue
        items: list[tuple[str, Any]] = [(key, value)]
        if key == "dynamic":
            items = []
            for (label,), dyn in _labelled(value, 1):
                contents = dyn.get("content", [])
                if not _is_block_list(contents) or len(contents) != 1:
                    problems.append(f"{where}: dynamic {label!r} needs exactly one content block")
                    continue
                items.append((label, [contents[0]]))
        for name, val in items:
            spec = block.fields.get(name)
            if spec is None:
                problems.append(f"{where}: unsupported argument or block {name!r}")
                continue
            present.add(name)
            if spec.block is None:
                if _is_block_list(val):
                    problems.append(f"{where}: {name!r} is an argument, written as a block")
                continue
            if not _is_block_list(val):
                problems.append(f"{where}: {name!r} is a block, written as an argument")
                continue
            for nested in val:
                problems += _check_body(schema, schema.block(spec.block), nested, f"{where}.{name}", False)
    for name, spec in block.fields.items():
        if spec.required and name not in present:
            kind = "block" if spec.block else "argument"
            problems.append(f"{where}: missing required {kind} {name!r}")
    return problems


_REFERENCE = re.compile(r"(?<![\w.])(var|local|data\.\w+|google_\w+)\.(\w+)")


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() if not k.startswith("__") for s in [k, *strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def check_references(schema: ProviderSchema, module: Module) -> list[str]:
    """References to undeclared variables, locals, resources, or to attributes a resource lacks."""
    problems: list[str] = []
    variables, local_names = set(module.variables), set(module.locals)
    resources = set(module.resources)
    data = {(f"data.{t}", n) for t, n in module.data}
    texts = []
    for parsed in module.files:
        texts += strings({k: v for k, v in parsed.items() if k != "variable"})
    for body in module.variables.values():
        texts += strings(body.get("validation", []))
    for text in texts:
        for root, name in _REFERENCE.findall(text):
            if root == "var" and name not in variables:
                problems.append(f"reference to undeclared variable var.{name}")
            elif root == "local" and name not in local_names:
                problems.append(f"reference to undeclared local.{name}")
            elif root.startswith("data.") and (root, name) not in data:
                problems.append(f"reference to undeclared {root}.{name}")
            elif root.startswith("google_") and root in schema.resources and (root, name) not in resources:
                problems.append(f"reference to undeclared resource {root}.{name}")
    return sorted(set(problems + check_attribute_paths(schema, texts)))


_CHAIN = re.compile(r"(?<![\w.])(google_\w+)\.(\w+)((?:\[[^\]]*\])?(?:\.\w+(?:\[[^\]]*\])?)*)")


def check_attribute_paths(schema: ProviderSchema, texts: list[str]) -> list[str]:
    """Every `google_x.name.a[0].b` in `texts` walks real attributes and nested blocks."""
    problems: list[str] = []
    for text in texts:
        for rtype, name, tail in _CHAIN.findall(text):
            if rtype not in schema.resources:
                continue
            path = [seg for seg in re.sub(r"\[[^\]]*\]", "", tail).split(".") if seg]
            if not path:
                continue
            allowed, block_fqn = schema.attributes(rtype), schema.resources[rtype]
            for depth, seg in enumerate(path):
                if seg not in allowed:
                    where = ".".join([f"{rtype}.{name}", *path[:depth]])
                    problems.append(f"{where} has no attribute {seg!r}")
                    break
                spec = schema.block(block_fqn).fields.get(seg) if block_fqn else None
                if spec is None or spec.block is None:
                    break  # a plain value (string, number, map): nothing below to check
                block_fqn = spec.block
                allowed = set(schema.block(block_fqn).fields) | schema.computed(block_fqn)
    return sorted(set(problems))


def check_module(schema: ProviderSchema, module: Module) -> list[str]:
    """Every problem `terraform validate` would report about provider types, blocks and arguments."""
    problems: list[str] = []
    for (rtype, name), body in module.resources.items():
        where = f"resource {rtype}.{name}"
        if rtype not in schema.resources:
            problems.append(f"{where}: the google provider {schema.version} has no resource type {rtype!r}")
            continue
        problems += _check_body(schema, schema.block(schema.resources[rtype]), body, where, True)
    for (dtype, name), body in module.data.items():
        where = f"data {dtype}.{name}"
        if dtype not in schema.data_sources:
            problems.append(f"{where}: the google provider {schema.version} has no data source {dtype!r}")
            continue
        problems += _check_body(schema, schema.block(schema.data_sources[dtype]), body, where, True)
    for pname, body in module.providers.items():
        if pname == "google":
            problems += _check_body(schema, schema.block(schema.provider), body, "provider google", True)
    return problems + check_references(schema, module)
