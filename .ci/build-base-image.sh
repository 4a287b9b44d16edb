#!/usr/bin/env bash
# Build the local stand-in for the public PyTorch image (no image registry is reachable here):
# the debootstrap'd bookworm minbase tarball -> `docker import` -> a venv at /opt/venv with pip and
# the CPU torch wheel, first on PATH, so it offers `python` and `pip` like pytorch/pytorch does.
# Cached: an image whose label matches the inputs' hash is reused. Prints the image tag last.
# Usage: .ci/build-base-image.sh [TAG]   (default trainer-ci-base:bookworm)
# Env: TRAINER_TEST_ROOTFS_TAR (default .ci-cache/bookworm-minbase.tar, made if missing),
#      TORCH_WHEEL (default the CPU cp311 wheel in /opt/wheels), HOST_CA_BUNDLE (for pip, build only).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-trainer-ci-base:bookworm}
rootfs=${TRAINER_TEST_ROOTFS_TAR:-.ci-cache/bookworm-minbase.tar}
ca_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
wheel=${TORCH_WHEEL:-$(compgen -G '/opt/wheels/torch-*+cpu-cp311-cp311-manylinux*_x86_64.whl' | head -1 || true)}
export DOCKER_BUILDKIT=0

[[ -f "$wheel" ]] || { echo "build-base-image: no CPU torch wheel (set TORCH_WHEEL to a torch-*+cpu-cp311 wheel)" >&2; exit 1; }
[[ -s "$rootfs" ]] || .ci/bookworm-rootfs.sh "$rootfs" >&2
[[ -s "$ca_bundle" ]] || { echo "build-base-image: CA bundle $ca_bundle not found (set HOST_CA_BUNDLE)" >&2; exit 1; }

inputs=$( { sha256sum "$0"; basename "$wheel"; stat -c '%s %Y' "$rootfs"; } | sha256sum | cut -c1-16)
if [[ "$(docker image inspect -f '{{index .Config.Labels "trainer.ci.inputs"}}' "$tag" 2>/dev/null)" == "$inputs" ]]; then
  echo "build-base-image: $tag is up to date" >&2
  echo "$tag"
  exit 0
fi

rootfs_tag=trainer-ci-rootfs:bookworm
echo "build-base-image: docker import $rootfs" >&2
docker import "$rootfs" "$rootfs_tag" >&2

ctx=$(mktemp -d /tmp/trainer-base-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
ln "$wheel" "$ctx/" 2>/dev/null || cp "$wheel" "$ctx/"
cp "$ca_bundle" "$ctx/host-ca.pem"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs_tag
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY $(basename "$wheel") host-ca.pem /tmp/wheels/
# The host's CA bundle serves this one install only (a TLS-intercepting proxy may sit between
# here and PyPI); it is not left in the image, as the public PyTorch image would not have it.
RUN python3 -m venv /opt/venv \\
 && pip install --no-cache-dir --cert /tmp/wheels/host-ca.pem /tmp/wheels/$(basename "$wheel") \\
 && rm -rf /tmp/wheels \\
 && python -c "import torch; print('torch', torch.__version__)"
LABEL trainer.ci.inputs=$inputs
CMD ["python3"]
DOCKERFILE
echo "build-base-image: building $tag" >&2
docker build --network host -q -t "$tag" "$ctx" >&2
docker image rm "$rootfs_tag" >/dev/null 2>&1 || true
echo "$tag"
