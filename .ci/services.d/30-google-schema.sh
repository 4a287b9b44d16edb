# shellcheck shell=bash
# Sourced by .ci/run. The google provider cannot be installed offline. Its schema ships in the cdktf
# bindings on PyPI (cdktf-cdktf-provider-google 16.12.1 = hashicorp/google 6.50.0): the tests check
# infra/ against it (tests/infra/terraform_schema.py) and generate from it the stand-in google provider
# that real Terraform runs with (tests/standins/tf_harness.py, tests/standins/google_provider/; its Python
# runs in .tools/, which has the `tf` package). Fetch the wheel once (49 MB), verify it, keep only its
# jsii tarball (31 MB: the assembly and the generated sources) in .ci-cache/, tell the tests where it is.
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
.tools/bin/python -c 'import tf.runner' ||
  { echo "30-google-schema: the tf package is missing from .tools/ (make setup-tools)" >&2; exit 1; }
