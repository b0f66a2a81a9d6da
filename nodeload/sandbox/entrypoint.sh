#!/bin/sh
# Entrypoint of a nodeload sandbox node: containerd in the background, sshd in the foreground.
set -eu

# /run is a fresh tmpfs on every start.
mkdir -p /run/sshd /run/containerd /root/.ssh
chmod 0755 /run/sshd
chmod 0700 /root/.ssh

# Per-node host key; only ed25519, which is quick to generate.
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C "nodeload-node" -f /etc/ssh/ssh_host_ed25519_key
fi

if [ -n "${NODELOAD_AUTHORIZED_KEY:-}" ]; then
    printf '%s\n' "$NODELOAD_AUTHORIZED_KEY" >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
fi

# A node may listen where k3s does (NODELOAD_CONTAINERD_SOCKET); ctr follows CONTAINERD_ADDRESS.
containerd --config /etc/containerd/config.toml --address "${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}" &

# Command-line options win over sshd_config. UsePAM=no: pam_loginuid fails in containers.
exec /usr/sbin/sshd -D -e \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key \
    -o PermitRootLogin=prohibit-password \
    -o PasswordAuthentication=no \
    -o KbdInteractiveAuthentication=no \
    -o UsePAM=no \
    -o AllowStreamLocalForwarding=yes \
    -o AllowTcpForwarding=yes
