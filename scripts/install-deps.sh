#!/usr/bin/env bash
# Installs the Debian packages imops needs to build, test and run its demo,
# only when some are missing (apt-get runs only then). Idempotent.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libomp-dev
  libturbojpeg0-dev libjpeg-dev libpng-dev zlib1g-dev
  libjansson-dev libyaml-dev libsqlite3-dev
  libmicrohttpd-dev libcurl4-openssl-dev libxml2-dev curl
  libdnnl-dev
  protobuf-c-compiler libprotobuf-c-dev
  libcmocka-dev
  python3 python3-venv python3-pip python3-pytest python3-numpy python3-pil
  dataset-fashion-mnist
  python3-torch python3-torchvision python3-pandas
  prometheus wrk
  chromium  # the browser test_serve_docs.py drives (with PyPI playwright) through /docs
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
