#!/usr/bin/env bash
# Builds the imops image (deploy/Dockerfile) where Docker Hub cannot be reached
# but a Debian mirror can: the debian:12-slim base is replaced by one made here.
#   1. debootstrap --variant=minbase bookworm: a minimal Debian 12 root file
#      system from the mirror (apt, dpkg, bash, coreutils; no systemd);
#   2. the same trims as Docker's debian:12-slim: dpkg skips docs, man pages and
#      locales, apt keeps no package cache, and the lists and caches go;
#      sources.list names bookworm, bookworm-updates and bookworm-security;
#   3. docker import: the tree becomes the image BASE (imops-local/debian:12),
#      skipped when that image exists already (FORCE_BASE=1 remakes it);
#   4. docker build with --build-arg DEBIAN_IMAGE=BASE and --network host (the
#      daemon may run without a bridge), with BuildKit so that
#      deploy/Dockerfile.dockerignore filters the build context (the classic
#      builder ignores that file and would send the whole tree, build trees and
#      venvs included). BuildKit needs a client with the buildx plugin or one
#      older than 23.0 (those drive the daemon's own BuildKit), so the first such
#      client among `docker` on PATH and /usr/bin/docker (Debian's docker.io) is used.
# Needs root (debootstrap chroots, mounts /proc) and a running Docker daemon.
# Usage (from anywhere): sudo deploy/docker/build-offline.sh [TAG]   (default imops:dev)
# Environment: MIRROR (http://deb.debian.org/debian), SECURITY_MIRROR
# (http://deb.debian.org/debian-security), BASE (imops-local/debian:12), FORCE_BASE=1,
# DOCKER (the docker client to use instead of the search above).
set -euo pipefail
die() { echo "build-offline.sh: $*" >&2; exit 1; }
tag=${1:-imops:dev}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
base=${BASE:-imops-local/debian:12}
root=$(cd "$(dirname "$0")/../.." && pwd)
# The first client that can build with BuildKit: buildx present, or a version before 23.
buildkit_client() {
  local c v
  for c in "$@"; do
    command -v "$c" >/dev/null || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return 0; fi
    v=$("$c" version --format '{{.Client.Version}}' 2>/dev/null || true)
    case $v in 1[0-9].*|2[0-2].*) echo "$c"; return 0 ;; esac
  done
  return 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap needs it): sudo $0 $*"
docker=$(buildkit_client ${DOCKER:-docker /usr/bin/docker}) ||
  die "no docker client that builds with BuildKit (${DOCKER:-docker, /usr/bin/docker}): install docker.io, or the buildx plugin for a newer client"
"$docker" info >/dev/null 2>&1 || die "no running Docker daemon ($docker info failed); start dockerd first"

if [ "${FORCE_BASE:-0}" = 1 ] || ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
  rootfs=$(mktemp -d /tmp/imops-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "== debootstrap bookworm from $mirror into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
  cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$rootfs/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{groff,info,linda,lintian,locale,man}/* \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log
  echo "== docker import -> $base"
  tar --numeric-owner -C "$rootfs" -c . | "$docker" import -c 'CMD ["bash"]' - "$base"
fi

echo "== docker build -> $tag (base $base)"
cd "$root"
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
DOCKER_BUILDKIT=1 "$docker" build --network host -f deploy/Dockerfile \
  --build-arg DEBIAN_IMAGE="$base" --build-arg IMOPS_REVISION="$rev" -t "$tag" .
"$docker" image ls "$tag"
