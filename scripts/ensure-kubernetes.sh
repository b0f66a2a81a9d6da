#!/usr/bin/env bash
# What the sandbox cluster (nodeload.sandbox.k8s) needs on a Debian host: the tools that build
# kube-apiserver, kubelet, kube-controller-manager and kube-scheduler from Debian's `kubernetes`
# source package (dpkg-dev for `apt-get source`, Go, rsync, gcc with a static libc for the pause
# binary), etcd for the control plane, and deb-src entries mirroring the Debian `deb` ones so
# that `apt-get source kubernetes` finds the package. Idempotent; needs root to change anything.
set -euo pipefail

need=()
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
command -v go >/dev/null || need+=(golang-go)
command -v rsync >/dev/null || need+=(rsync)
command -v etcd >/dev/null || need+=(etcd-server)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v make >/dev/null || need+=(make)

# Only the Debian archives are mirrored (a third-party repository rarely serves sources).
SRC_LIST=/etc/apt/sources.list.d/nodeload-deb-src.sources
has_sources() {
    apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes$'
}

mirror_deb_src() {
    python3 - "$SRC_LIST" <<'EOF'
import re
import sys
from pathlib import Path

stanzas = []
for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
    if path.name == Path(sys.argv[1]).name:
        continue
    for block in re.split(r"\n\s*\n", path.read_text()):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, re.M))
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
            if "debian" in fields.get("URIs", ""):
                lines = [line for line in block.strip().splitlines() if not line.startswith("#")]
                stanzas.append("\n".join(re.sub(r"^Types:.*$", "Types: deb-src", l) for l in lines))
lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
for path in lists:
    if not path.exists():
        continue
    for line in path.read_text().splitlines():
        match = re.match(r"^deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line.strip())
        if match and "debian" in match.group(2):
            options = (match.group(1) or "").strip("[] \t")
            stanza = f"Types: deb-src\nURIs: {match.group(2)}\nSuites: {match.group(3)}\nComponents: {match.group(4)}"
            for option in options.split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    stanza += f"\nSigned-By: {value}"
            stanzas.append(stanza)
if not stanzas:
    sys.exit(3)
Path(sys.argv[1]).write_text("# Written by nodeload's scripts/ensure-kubernetes.sh\n" + "\n\n".join(stanzas) + "\n")
EOF
}

if [ ${#need[@]} -eq 0 ] && has_sources; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-kubernetes: missing ${need[*]:-} deb-src entries (run as root, or install them yourself)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! has_sources; then
    echo "ensure-kubernetes: adding deb-src entries ($SRC_LIST)"
    mirror_deb_src || echo "ensure-kubernetes: no Debian archive in /etc/apt to mirror as deb-src" >&2
fi
apt-get update -qq </dev/null
if [ ${#need[@]} -gt 0 ]; then
    echo "ensure-kubernetes: installing ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi
# Not fatal here: the other suites need none of this; the cluster suite fails and says why.
has_sources || echo "ensure-kubernetes: apt-get source kubernetes finds no source package (not Debian 12?)" >&2
