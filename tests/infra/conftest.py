"""Fixtures of the infra tests: the stand-in google provider for real Terraform (tf_harness.py)."""

from __future__ import annotations

import pytest

from tests.infra.tf_harness import StandInGoogle, provider_python, schema_tarball
from tests.support import require, tool


@pytest.fixture(scope="session")
def stand_in_google(tmp_path_factory) -> StandInGoogle:
    """Terraform's google provider for tests, installed once per session (see tf_harness)."""
    terraform = tool("terraform")
    schema = schema_tarball()
    require(
        schema is not None and schema.is_file(),
        "the google provider schema (cdktf-cdktf-provider-google 16.12.1) is not cached: "
        "run `bash -c 'source .ci/services.d/30-google-schema.sh'` or set TRAINER_TEST_GOOGLE_SCHEMA",
    )
    python = provider_python()
    require(python is not None, "the `tf` package is not installed in .tools/: run `make setup-tools`")
    assert schema is not None and python is not None
    return StandInGoogle(tmp_path_factory.mktemp("stand-in-google"), terraform).install(python, schema)
