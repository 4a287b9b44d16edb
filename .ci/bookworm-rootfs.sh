#!/usr/bin/env bash
# Make (once per CI run, cached) a Debian bookworm minbase root with python3, as a tarball.
# Used twice: `docker import` turns it into the local base image (no registry is reachable),
# and the Ansible tests unpack it into a fresh folder to provision with the chroot connection.
# Usage: .ci/bookworm-rootfs.sh [OUT_TAR]   (default .ci-cache/bookworm-minbase.tar)
set -euo pipefail
out=${1:-.ci-cache/bookworm-minbase.tar}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [[ -s "$out" ]]; then
  echo "bookworm rootfs: cached at $out"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
root=$(mktemp -d /tmp/bookworm-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$root" "$mirror" >/dev/null
# The same apt sources a GCP Debian 12 image ships, so roles that add components see the usual file.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -cf "$out.tmp" --numeric-owner .
mv "$out.tmp" "$out"
echo "bookworm rootfs: wrote $out ($(du -h "$out" | cut -f1))"
