#!/usr/bin/env bash
# Build the hpf image: the project's wheel and its dependencies' wheels on this host (docker/wheels/), then the
# image from them (docker/Dockerfile), tagged hpf-federation:latest (or $HPF_IMAGE).
#
#   docker/build.sh                 # FROM the public python:3.11-slim-bookworm (needs its registry)
#   docker/build.sh --local-base    # FROM a base made here from Debian's packages: no registry needed
#
# --local-base makes hpf-base:bookworm once (debootstrap of Debian 12 with python3 and its venv module, imported
# as an image; about a minute) and reuses it after. The wheels are built with this host's Python, whose minor
# version must be the base's (3.11 for both bases above).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
image="${HPF_IMAGE:-hpf-federation:latest}"
python="${PYTHON:-python3}"
[ -x "$root/.venv/bin/python" ] && python="${PYTHON:-$root/.venv/bin/python}"
base="python:3.11-slim-bookworm"
local_base="hpf-base:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "${1:-}" = "--local-base" ]; then
    base="$local_base"
    if ! docker image inspect "$local_base" > /dev/null 2>&1; then
        command -v debootstrap > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap > /dev/null
        rootfs="$(mktemp -d)"
        trap 'rm -rf "$rootfs"' EXIT
        echo "base image: debootstrap of Debian bookworm from $mirror" >&2
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
            > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
        rm -f "$rootfs.log"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$local_base" > /dev/null
        echo "base image: $local_base imported" >&2
    fi
elif [ -n "${1:-}" ]; then
    echo "usage: docker/build.sh [--local-base]" >&2
    exit 2
fi

rm -rf "$root/docker/wheels" "$root/build"  # setuptools' build/ would carry files since deleted into the wheel
# (pip's notes on index locations this machine does not have are left out)
"$python" -m pip wheel --quiet --wheel-dir "$root/docker/wheels" "$root" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
echo "wheels: $(ls "$root/docker/wheels" | wc -l) in docker/wheels" >&2
docker build --quiet --build-arg "BASE=$base" --tag "$image" "$root/docker" 2>&1 > /dev/null | { grep -v "legacy builder\|buildx\|docs.docker.com/go/buildx\|^$" || true; } >&2
echo "image: $image built FROM $base" >&2
