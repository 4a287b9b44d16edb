"""Real Terraform over a module, offline, with the stand-in google provider: the tests' harness.

    def test_something(stand_in_google, tmp_path):
        tf = stand_in_google.terraform(tmp_path / "infra")        # a copy of infra/ (or module=...)
        tf.cloud.instance_address("tweet-trainer-0", "127.0.0.2")  # what GCP will answer
        tf.init()
        tf.apply({"node_count": 2})                                # BASE_VARS plus these variables
        outputs = tf.output()                                      # `terraform output -json`, parsed
        tf.destroy()

`stand_in_google` (a session-scoped fixture defined here; tests/infra/conftest.py imports it, and so
can any other conftest.py: `from tests.standins.tf_harness import stand_in_google  # noqa: F401`)
installs, once, into a temporary folder:

- a filesystem mirror holding
  `registry.terraform.io/hashicorp/google/6.50.0/linux_amd64/terraform-provider-google_v6.50.0`, an
  executable that runs tests/standins/google_provider/provider.py with the .tools/ Python (`tf`, plugin
  protocol 6), serving the schema generated from the cached cdktf bindings (google_provider/schema.py)
  for every resource and data source type that infra/*.tf declares;
- a CLI configuration (`provider_installation { filesystem_mirror { ... } }`, nothing else direct), which
  every Terraform run here gets as TF_CLI_CONFIG_FILE, with CHECKPOINT_DISABLE=1 and no plugin cache.
  A user's `make infra-*` never sees either.

`Terraform(workdir, env)` runs the real terraform binary in `workdir` with that environment, `-input=false
-no-color`, and raises TerraformError (its output attached) when a command fails, unless `check=False`.
Its `cloud` (google_provider/cloud.py) is the stand-in GCP of this working directory: what exists,
what apply answers (addresses), which creates fail with GCP's error (`stock_out(zone)`,
`quota_exceeded(region)`), and drift (`set_attributes(...)`, `remove(...)`) seen at the next refresh.
`stand_in_google.env(workdir)` gives the same environment for running terraform some other way (make,
python -m ops).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.standins.google_provider.cloud import CLOUD_ENV, StandInCloud
from tests.standins.google_provider.schema import SCHEMA_ENV, generate, module_types
from tests.support import ROOT, TOOLS_BIN, require, tool

INFRA = ROOT / "infra"
VERSION = "6.50.0"
PROVIDER_PATH = (
    f"registry.terraform.io/hashicorp/google/{VERSION}/linux_amd64/terraform-provider-google_v{VERSION}"
)
MODULE_IGNORE = shutil.ignore_patterns(
    ".terraform*",
    "*.tfstate*",
    "terraform.tfvars",
    "backend.hcl",
    "*_override.tf",
    ".stand-in-cloud*",
    "*.auto.tfvars.json",
    "tfplan",
)
# Variables of infra/ that every plan needs; the public key is the module's own test key.
BASE_VARS: dict[str, Any] = {
    "project_id": "stand-in-project",
    "ssh_source_ranges": ["198.51.100.7/32"],
    "ssh_public_key_path": str(INFRA / "tests" / "fixtures" / "id_test.pub"),
}


class TerraformError(Exception):
    """A terraform command failed; `output` holds what it printed."""

    def __init__(self, args: list[str], done: subprocess.CompletedProcess):
        self.output = done.stdout + done.stderr
        self.returncode = done.returncode
        super().__init__(f"terraform {' '.join(args)} exited {done.returncode}:\n{self.output[-6000:]}")


def schema_tarball() -> Path | None:
    """The cached cdktf bindings of google 6.50.0 (.ci/services.d/30-google-schema.sh fetches them)."""
    env = os.environ.get("TRAINER_TEST_GOOGLE_SCHEMA")
    if env:
        return Path(env)
    cached = sorted((ROOT / ".ci-cache" / "google-schema").glob("*.jsii.tgz"))
    return cached[0] if cached else None


def provider_python() -> Path | None:
    """The Python that has the `tf` package: .tools/ (make setup-tools)."""
    python = TOOLS_BIN / "python"
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import tf.runner"], capture_output=True, timeout=60)
    return python if done.returncode == 0 else None


@dataclass
class StandInGoogle:
    """The installed stand-in provider (see the module docstring)."""

    root: Path
    terraform_bin: str
    schema_file: Path = field(init=False)
    cli_config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.schema_file = self.root / "google-6.50.0-schema.json"
        self.cli_config = self.root / "terraform.rc"

    def install(self, python: Path, schema_tgz: Path, module: Path = INFRA) -> StandInGoogle:
        resources, data_sources = module_types(module)
        self.schema_file.write_text(json.dumps(generate(schema_tgz, resources, data_sources)))
        executable = self.root / "mirror" / PROVIDER_PATH
        executable.parent.mkdir(parents=True)
        executable.write_text(
            "#!/bin/sh\n"
            "# The tests' stand-in google provider (tests/standins/google_provider/provider.py).\n"
            f"export PYTHONPATH='{ROOT}' {SCHEMA_ENV}='{self.schema_file}' HOME='{self.root}'\n"
            f"exec '{python}' -m tests.standins.google_provider.provider \"$@\"\n"
        )
        executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.cli_config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{self.root / "mirror"}"\n'
            '    include = ["registry.terraform.io/hashicorp/google"]\n  }\n'
            "}\n"
        )
        return self

    def env(self, workdir: Path) -> dict[str, str]:
        """The environment for terraform in `workdir`: this mirror, no network, its own cloud file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GOOGLE_"))}
        env.update({
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            CLOUD_ENV: str(Path(workdir) / ".stand-in-cloud.json"),
        })  # fmt: skip
        return env

    def terraform(self, workdir: Path, module: Path | None = INFRA) -> Terraform:
        """A Terraform runner in `workdir`, with a copy of `module` there first (None: use it as is)."""
        workdir = Path(workdir)
        if module is not None:
            shutil.copytree(module, workdir, dirs_exist_ok=True, ignore=MODULE_IGNORE)
        return Terraform(workdir, self.env(workdir), self.terraform_bin)


@dataclass
class Terraform:
    """terraform in one working directory (see the module docstring)."""

    workdir: Path
    env: dict[str, str]
    binary: str = "terraform"
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def cloud(self) -> StandInCloud:
        return StandInCloud(Path(self.env[CLOUD_ENV]))

    def run(self, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        start = time.monotonic()
        done = subprocess.run(
            [self.binary, *args], cwd=self.workdir, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        self.timings.append((args[0], time.monotonic() - start))
        if check and done.returncode != 0:
            raise TerraformError(list(args), done)
        return done

    @staticmethod
    def var_args(variables: dict[str, Any]) -> list[str]:
        return [f"-var={name}={_hcl(value)}" for name, value in variables.items()]

    def init(self, **kw: Any) -> subprocess.CompletedProcess:
        return self.run("init", "-input=false", "-no-color", "-backend=false", **kw)

    def validate(self, **kw: Any) -> subprocess.CompletedProcess:
        return self.run("validate", "-no-color", **kw)

    def plan(self, variables: dict[str, Any] | None = None, *extra: str, **kw: Any) -> dict[str, Any]:
        """`terraform plan` then `terraform show -json` of the saved plan, parsed."""
        self.run(
            "plan",
            "-input=false",
            "-no-color",
            "-out=tfplan",
            *self.var_args({**BASE_VARS, **(variables or {})}),
            *extra,
            **kw,
        )
        return json.loads(self.run("show", "-json", "-no-color", "tfplan").stdout)

    def apply(
        self, variables: dict[str, Any] | None = None, *extra: str, **kw: Any
    ) -> subprocess.CompletedProcess:
        args = self.var_args({**BASE_VARS, **(variables or {})})
        return self.run("apply", "-input=false", "-no-color", "-auto-approve", *args, *extra, **kw)

    def destroy(
        self, variables: dict[str, Any] | None = None, *extra: str, **kw: Any
    ) -> subprocess.CompletedProcess:
        args = self.var_args({**BASE_VARS, **(variables or {})})
        return self.run("destroy", "-input=false", "-no-color", "-auto-approve", *args, *extra, **kw)

    def output(self) -> dict[str, Any]:
        """`terraform output -json`, parsed: {name: {"value", "type", "sensitive"}}."""
        return json.loads(self.run("output", "-json", "-no-color").stdout)

    def state_list(self) -> list[str]:
        return self.run("state", "list", "-no-color").stdout.split()

    def test(self, *extra: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.run("test", "-no-color", *extra, **kw)


@pytest.fixture(scope="session")
def stand_in_google(tmp_path_factory) -> StandInGoogle:
    """Terraform's google provider for tests, installed once per session (see the module docstring)."""
    terraform = tool("terraform")
    schema = schema_tarball()
    require(
        schema is not None and schema.is_file(),
        "the google provider schema (cdktf-cdktf-provider-google 16.12.1) is not cached: "
        "run `bash -c 'source .ci/services.d/30-google-schema.sh'` or set TRAINER_TEST_GOOGLE_SCHEMA",
    )
    python = provider_python()
    require(python is not None, "the `tf` package is not installed in .tools/: run `make setup-tools`")
    if schema is None or python is None:  # unreachable: require() skipped or failed; for the type checker
        raise RuntimeError("stand-in google provider unavailable")
    return StandInGoogle(tmp_path_factory.mktemp("stand-in-google"), terraform).install(python, schema)


def _hcl(value: Any) -> str:
    """A -var value: strings as they are, everything else as JSON (which HCL reads)."""
    return value if isinstance(value, str) else json.dumps(value)


def main() -> None:
    """`python -m tests.standins.tf_harness DIR`: install the stand-in under DIR and print its CLI config."""
    root = Path(sys.argv[1])
    schema, python = schema_tarball(), provider_python()
    if schema is None or python is None:
        raise SystemExit(
            "needs .tools/ with tf (make setup-tools) and the cached schema (30-google-schema.sh)"
        )
    root.mkdir(parents=True, exist_ok=True)
    installed = StandInGoogle(root, shutil.which("terraform") or "terraform").install(python, schema)
    print(f"export TF_CLI_CONFIG_FILE={installed.cli_config} CHECKPOINT_DISABLE=1")


if __name__ == "__main__":
    main()
