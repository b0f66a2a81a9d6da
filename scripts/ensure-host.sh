#!/usr/bin/env bash
# Install and start what nodeload's tests and demo need on a Debian/Ubuntu host:
# containerd + OpenSSH + a registry (distribution; integration tests run them as plain
# processes, with htpasswd from apache2-utils for its logins), skopeo, what the sandbox cluster
# builds and runs Kubernetes with (scripts/ensure-kubernetes.sh), and a running Docker engine
# (scripts/ensure-docker.sh), and zsh and fish for the completion tests. Idempotent; needs root.
set -euo pipefail

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v ctr >/dev/null || need+=(containerd)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v skopeo >/dev/null || need+=(skopeo)
command -v tc >/dev/null || need+=(iproute2)
command -v zstd >/dev/null || need+=(zstd)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v docker-compose >/dev/null || need+=(docker-compose)
# The shells whose completion scripts the tests load (bash is Debian's own).
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${need[*]} (run as root, or install them yourself)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The sandbox cluster's build tools, etcd and CNI plugins, and deb-src entries for its source.
"$(dirname "$0")/ensure-kubernetes.sh"
exec "$(dirname "$0")/ensure-docker.sh"
