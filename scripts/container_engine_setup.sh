#!/usr/bin/env bash
# Prepare a root Debian 12 machine without a running engine or a reachable
# registry (the CI machines) to build and run the project's images: rootful
# podman with runc, and a local stand-in for `python:3.11-slim` so that the
# unchanged Dockerfiles build. ../shared/CONTAINERS.md explains each step.
# Idempotent: every step is skipped when its result is already there.
#
# Environment: BASE_IMAGE (default docker.io/library/python:3.11-slim) is the
# name the stand-in takes; DEBIAN_MIRROR overrides the apt mirror read from
# /etc/apt/sources.list.d/debian.sources.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim}"
CONF=/etc/containers/containers.conf

install_packages() {
    command -v podman >/dev/null && command -v runc >/dev/null \
        && command -v debootstrap >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    # Another job may hold the dpkg lock for a while: wait instead of failing.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq podman buildah runc debootstrap
}

configure_engine() {
    grep -q '^runtime = "runc"' "$CONF" 2>/dev/null && return
    # crun fails on this machine's hybrid cgroups, and podman's default
    # rlimits exceed the hard limits the machine grants.
    local nofile nproc
    nofile="$(ulimit -Hn)"
    nproc="$(ulimit -Hu)"
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources
}

build_base_image() {
    podman image exists "$BASE_IMAGE" && return
    local rootfs
    rootfs="$(mktemp -d /tmp/resnet-serve-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' RETURN
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$(debian_mirror)" >/dev/null

    # This machine reaches PyPI through a proxy with its own certificate
    # authority; the stand-in trusts it so that `pip install` works in RUN.
    # The shipped Dockerfiles never see these certificates.
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" \
        2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null
    chroot "$rootfs" python3 -m venv /opt/venv
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

    tar -C "$rootfs" -cf - . | podman import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' - localhost/resnet-serve-base >/dev/null
    podman tag localhost/resnet-serve-base "$BASE_IMAGE"
}

install_packages
configure_engine
build_base_image
echo "podman ready; $BASE_IMAGE is a local stand-in"
