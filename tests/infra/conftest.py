"""Fixtures of the infra tests: the stand-in google provider for real Terraform (tf_harness.py)."""

from tests.standins.tf_harness import stand_in_google  # noqa: F401 (a fixture: pytest finds it here)
