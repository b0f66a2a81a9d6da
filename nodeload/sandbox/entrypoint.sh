#!/bin/sh
# Entrypoint of a nodeload sandbox node: containerd in the background, sshd in the foreground.
# The NODELOAD_* variables make the variants of nodeload.sandbox.NodeVariant.
set -eu

# /run is a fresh tmpfs on every start.
mkdir -p /run/sshd /run/containerd /root/.ssh
chmod 0755 /run/sshd
chmod 0700 /root/.ssh

# Per-node host key; only ed25519, which is quick to generate. A compose topology hands one in
# (base64 of the private key), so that its known_hosts can be written before the node starts.
if [ -n "${NODELOAD_HOST_KEY:-}" ]; then
    printf '%s' "$NODELOAD_HOST_KEY" | base64 -d >/etc/ssh/ssh_host_ed25519_key
    chmod 0600 /etc/ssh/ssh_host_ed25519_key
    ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key >/etc/ssh/ssh_host_ed25519_key.pub
fi
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C "nodeload-node" -f /etc/ssh/ssh_host_ed25519_key
fi

if [ -n "${NODELOAD_AUTHORIZED_KEY:-}" ]; then
    printf '%s\n' "$NODELOAD_AUTHORIZED_KEY" >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
fi

# A non-root login (cloud images' ubuntu/ec2-user), with or without passwordless sudo.
login=${NODELOAD_LOGIN_USER:-}
if [ -n "$login" ] && ! id "$login" >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$login"
    usermod -p '*' "$login" # unlocked for key logins, and no password matches
    mkdir -p "/home/$login/.ssh"
    printf '%s\n' "${NODELOAD_AUTHORIZED_KEY:-}" >"/home/$login/.ssh/authorized_keys"
    chown -R "$login:$login" "/home/$login/.ssh"
    chmod 0700 "/home/$login/.ssh"
    case "${NODELOAD_SUDO:-}" in
    nopasswd) echo "$login ALL=(ALL) NOPASSWD:ALL" >/etc/sudoers.d/nodeload ;;
    password)
        echo "$login ALL=(ALL) ALL" >/etc/sudoers.d/nodeload
        echo "$login:a-password-nobody-knows" | chpasswd
        ;;
    esac
    [ -e /etc/sudoers.d/nodeload ] && chmod 0440 /etc/sudoers.d/nodeload
fi

# Programs a bare node lacks (socat: no relay; ctr: nothing to import with).
for program in ${NODELOAD_REMOVE:-}; do
    path=$(command -v "$program" || true)
    [ -n "$path" ] && rm -f "$path"
done

# A node with its own Docker Engine (nodeload-node-dockerd image); no iptables in a container.
if [ "${NODELOAD_DOCKERD:-no}" = yes ]; then
    dockerd --iptables=false --ip-forward=false --bridge=none >/var/log/dockerd.log 2>&1 &
fi

# A node may listen where k3s does; ctr follows CONTAINERD_ADDRESS.
socket=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
mkdir -p "$(dirname "$socket")"
if [ "${NODELOAD_SSHD:-yes}" = no ]; then # a kind/k3d-style node: reached with docker exec only
    exec containerd --config /etc/containerd/config.toml --address "$socket"
fi
containerd --config /etc/containerd/config.toml --address "$socket" &

# Command-line options win over sshd_config. UsePAM=no: pam_loginuid fails in containers.
exec /usr/sbin/sshd -D -e \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key \
    -o PermitRootLogin=prohibit-password \
    -o PasswordAuthentication=no \
    -o KbdInteractiveAuthentication=no \
    -o UsePAM=no \
    -o "AllowStreamLocalForwarding=${NODELOAD_STREAM_FORWARDING:-yes}" \
    -o AllowTcpForwarding=yes \
    -o "LogLevel=${NODELOAD_SSHD_LOG_LEVEL:-INFO}"
