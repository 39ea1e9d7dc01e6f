#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries a binary loads (ldd,
# then dpkg -S on the real file, also under /usr for merged-/usr systems): what
# the image's runtime stage installs, and nothing else.
# Usage: deploy/docker/runtime-packages.sh path/to/imops
set -euo pipefail
bin=$1
libs=$(ldd "$bin" | awk '$3 ~ /^\// {print $3}')
[ -n "$libs" ] || { echo "runtime-packages.sh: ldd found no shared libraries in $bin" >&2; exit 1; }
for lib in $libs; do
  real=$(readlink -f "$lib")
  dpkg -S "$real" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || \
    { echo "runtime-packages.sh: no Debian package owns $lib" >&2; exit 1; }
done | cut -d: -f1 | sort -u
