#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: installs the apt packages the build, the tests
# and the demo need, and downloads the Go modules. Safe to run again: it installs only what is missing.
# Usage: scripts/setup.sh [build|test]   (build: what `make build`/`make demo` need; test: everything)
set -euo pipefail
want=${1:-test}
pkgs_build="libopenblas-dev libopenblas0-pthread gcc"
pkgs_test="$pkgs_build python3-torch python3-numpy protobuf-compiler liblmdb-dev lmdb-utils webp kubectl dataset-fashion-mnist chromium"
case "$want" in
  build) pkgs="$pkgs_build liblmdb-dev" ;;
  test) pkgs="$pkgs_test" ;;
  *) echo "setup.sh: unknown target $want (want build or test)" >&2; exit 2 ;;
esac
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -f go.mod ]; then go mod download; fi
