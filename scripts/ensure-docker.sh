#!/bin/sh
# Make sure a Docker engine is running, plus the tools the sandbox needs to build its node
# image without a registry (debootstrap) and its test images (a static busybox).
# Idempotent, non-interactive; run as root (CI: .ci/run). Log: $DOCKERD_LOG.
set -eu

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_S=${DOCKER_WAIT_S:-60}
export DEBIAN_FRONTEND=noninteractive

apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        apt-get update -qq </dev/null
        apt_updated=yes
    fi
    apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

missing=""
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
[ -x /bin/busybox ] || missing="$missing busybox-static"
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    missing="$missing docker.io containerd runc"
fi
if [ -n "$missing" ]; then
    echo "ensure-docker: installing$missing"
    # shellcheck disable=SC2086 # word splitting is wanted
    apt_install $missing
fi

if docker info >/dev/null 2>&1; then
    echo "ensure-docker: Docker engine already running"
    exit 0
fi

# A dockerd that is alive but not answering yet is still starting: wait for it.
if ! { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }; then
    echo "ensure-docker: starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon must outlive this script and the CI step's process group.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

i=0
while ! docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge "$WAIT_S" ]; then
        echo "ensure-docker: Docker engine not ready after ${WAIT_S}s; last log lines:" >&2
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
echo "ensure-docker: Docker engine ready"
