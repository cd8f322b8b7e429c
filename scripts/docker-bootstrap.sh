#!/usr/bin/env bash
# Make a bare Debian machine able to run the test suite and the demo:
#   1. install the Docker engine if it is missing,
#   2. start dockerd if nothing answers,
#   3. make sure the base image debian:bookworm-slim exists: pull it, and only
#      when no registry can be reached, build it from the apt mirror with debootstrap.
# Every step says what it does. Safe to run again: each step is skipped when done.
set -euo pipefail

BASE_IMAGE="debian:bookworm-slim"
say() { printf '[docker-bootstrap] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The apt mirror this machine already uses (deb822 or classic format).
apt_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. Engine
if ! command -v dockerd >/dev/null 2>&1; then
  say "no Docker engine on this machine: installing Debian's docker.io"
  apt_install docker.io
else
  say "Docker engine present: $(dockerd --version)"
fi

# 2. Daemon
if docker info >/dev/null 2>&1; then
  say "dockerd is answering"
else
  say "starting dockerd in the background (log: /var/log/dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { say "dockerd did not come up; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log >&2; exit 1; }
  say "dockerd is answering"
fi

# 3. Base image
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "$BASE_IMAGE already present"
elif timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  say "pulled $BASE_IMAGE"
else
  mirror=$(apt_mirror)
  say "cannot pull $BASE_IMAGE: building it with debootstrap from the apt mirror"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  rootfs=$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)
  trap 'as_root rm -rf "$rootfs"' EXIT
  start=$(date +%s)
  as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/tmp/debootstrap.log 2>&1 \
    || { say "debootstrap failed; see /tmp/debootstrap.log"; tail -20 /tmp/debootstrap.log >&2; exit 1; }
  as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  as_root tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  say "built $BASE_IMAGE in $(( $(date +%s) - start ))s"
fi
say "ready"
