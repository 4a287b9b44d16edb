# shellcheck shell=bash
# Sourced by .ci/run. The google provider cannot be installed offline, so tests/infra/test_terraform.py
# checks infra/ against the provider's schema as shipped in the cdktf bindings on PyPI
# (cdktf-cdktf-provider-google 16.12.1 = hashicorp/google 6.50.0). Fetch the wheel once (49 MB),
# verify it, keep only its jsii assembly (31 MB) in .ci-cache/, and tell the tests where it is.
_google_schema_dir=.ci-cache/google-schema
_google_schema_tgz=$_google_schema_dir/provider-google@16.12.1.jsii.tgz
_google_schema_whl_sha256=88d021c89e1cf2abf2c935716d6548d26fe3da4bed30713d4fa36df1ef137436
if [[ ! -f "$_google_schema_tgz" ]]; then
  mkdir -p "$_google_schema_dir/wheel"
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
    cdktf-cdktf-provider-google==16.12.1 -d "$_google_schema_dir/wheel"
  echo "$_google_schema_whl_sha256  $_google_schema_dir/wheel/cdktf_cdktf_provider_google-16.12.1-py3-none-any.whl" |
    sha256sum -c --quiet
  .venv/bin/python - "$_google_schema_dir/wheel/cdktf_cdktf_provider_google-16.12.1-py3-none-any.whl" \
    "$_google_schema_tgz" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("cdktf_cdktf_provider_google/_jsii/provider-google@16.12.1.jsii.tgz") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  rm -rf "$_google_schema_dir/wheel"
fi
export TRAINER_TEST_GOOGLE_SCHEMA=$PWD/$_google_schema_tgz
echo "google provider schema: $TRAINER_TEST_GOOGLE_SCHEMA"
