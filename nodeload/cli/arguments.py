"""The command line's arguments: one parser, argument groups shared by the commands."""

from __future__ import annotations

import argparse
import enum
import os
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from nodeload import __version__

DEFAULT_TIMEOUT = 60.0  # the library's default (nodeload.containerd.client), without importing grpc
DEFAULT_PARALLEL = 8
DEFAULT_RETRIES = 3  # nodeload.fanout's, without importing it
DEFAULT_ROLLOUT_TIMEOUT = 300.0  # nodeload.rollout's, without importing it
DEFAULT_PERSIST = 600.0  # how long a persistent session waits for the next push, unless told


class Auto(enum.Enum):
    """``--persist``'s default, decided when the push runs (:func:`persist_seconds`)."""

    AUTO = "auto"


AUTO = Auto.AUTO


def persist_seconds(
    value: float | Auto | None, *, terminal: bool, environ: Mapping[str, str]
) -> float | None:
    """How long a persistent session should stay for this push; None for no session.

    Left to decide (:data:`AUTO`), a push typed at a terminal gets one (the edit-build-push loop is
    where the start-up cost is paid again and again); under CI (``$CI`` set, as every CI service
    sets it) or without a terminal, none, so no process outlives a script.
    """
    if value is not AUTO:
        return value
    ci = environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return DEFAULT_PERSIST if terminal and not ci else None


class _CommandParser(argparse.ArgumentParser):
    """A parser whose unrecognized arguments are told with the usage of the command they were
    given to (``push --bad-flag`` shows push's usage, not the list of commands)."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            _chosen(self, parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _chosen(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)command parser that ``parsed`` went through."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(parsed, action.dest, None) or "")
            if isinstance(sub, argparse.ArgumentParser):
                return _chosen(sub, parsed)
    return parser


def build_parser(prog: str = "nodeload") -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = _CommandParser(
        prog=prog,
        description="Push container images straight into nodes' containerd over SSH, "
        "sending only the blobs each node lacks.",
    )
    parser.add_argument("--version", action="version", version=f"nodeload {__version__}")
    parser.epilog = (
        "Any long option's default can be set in ${XDG_CONFIG_HOME:-~/.config}/nodeload/config.toml "
        "($NODELOAD_CONFIG names another): [defaults] for options commands share, [push], [nodes]... "
        "for one command's; flags win over the environment, which wins over the file."
    )
    commands = parser.add_subparsers(
        dest="verb", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    push = commands.add_parser(
        "push",
        help="push images to nodes",
        description="Push each IMAGE to each selected node, sending only the blobs the node lacks.\n\n"
        "IMAGE is docker-daemon:REF, oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],\n"
        "docker://REF (a registry this machine reaches), containerd:REF (a containerd on this machine:\n"
        "nerdctl, BuildKit, Docker's containerd image store), or a bare REF from the local Docker daemon.",
        epilog="examples:\n"
        "  nodeload push myapp:dev --node root@10.0.0.11 --node root@10.0.0.12\n"
        "  nodeload push containerd:myapp:dev --source-namespace moby --all-nodes\n"
        "  nodeload push oci:./out:dev --node worker-1 --json\n\n"
        "exit status: 0 every node has every image, 1 a node or a source failed, 2 usage error, "
        "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("images", nargs="+", metavar="IMAGE")
    _selection_arguments(push)
    _push_arguments(push)
    _ssh_arguments(push)
    _output_arguments(push)
    _nodes_command(commands)
    _serve_command(commands)
    _persist_command(commands)
    _gc_command(commands)
    _images_command(commands)
    _rm_command(commands)
    _cache_command(commands)
    _sandbox_command(commands)
    _completion_command(commands)
    return parser


def _nodes_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nodes = commands.add_parser(
        "nodes",
        help="show which nodes a push would reach, and how",
        description="For each node the selection yields: where each SSH connection goes (host, port,\n"
        "user, keys, every jump host, ProxyCommand, known_hosts files and host-key alias, resolved by\n"
        "OpenSSH's ssh -G), or the container or agent pod it is reached through; the containerd\n"
        "sockets to try and the namespace. --check connects (writing nothing) and says what answered.",
        epilog="examples:\n"
        "  nodeload nodes --inventory hosts.ini --limit 'web:!web-3'\n"
        "  nodeload nodes --all-nodes --context prod --check --json\n\n"
        "exit status: 0 every node resolved (and, with --check, reached), 1 otherwise, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _selection_arguments(nodes)
    group = nodes.add_argument_group("what is shown")
    group.add_argument(
        "--check", action="store_true", help="connect to each node and its containerd (nothing is written)"
    )
    group.add_argument(
        "--namespace",
        default="k8s.io",
        metavar="NS",
        help="containerd namespace a push would use (default k8s.io)",
    )
    group.add_argument(
        "--containerd-socket", type=_node_path, metavar="PATH", help="containerd socket on the nodes"
    )
    group.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="containerd deadline"
    )
    group.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help="nodes checked at once (default 8)",
    )
    _ssh_arguments(nodes)
    _output_arguments(nodes)


def _persist_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    persist = commands.add_parser(
        "persist",
        help="the background session pushes are handed to (see push --persist)",
        description="The background session pushes typed at a terminal (or with --persist) are handed to "
        "(one per user, Python and nodeload).",
    )
    persist.add_argument(
        "action", choices=("status", "stop"), help="status: whether it runs; stop: end it now"
    )
    persist.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    persist.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def _serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="a temporary registry whose storage is the nodes' containerd",
        description="Serve the selected nodes as an OCI registry on 127.0.0.1 while CMD runs (or until\n"
        "Ctrl-C): docker push, skopeo copy, buildx, crane... push straight into the nodes. CMD gets\n"
        "NODELOAD_REGISTRY (host:port), DOCKER_CONFIG and REGISTRY_AUTH_FILE (per-run credentials).",
        epilog="examples:\n"
        "  nodeload serve --all-nodes -- sh -c 'docker tag app:dev $NODELOAD_REGISTRY/app:dev &&\n"
        "                                       docker push $NODELOAD_REGISTRY/app:dev'\n"
        "  nodeload serve --node worker-1 -- skopeo copy --dest-tls-verify=false \\\n"
        "      oci:./out:dev docker://\\$NODELOAD_REGISTRY/app:dev\n\n"
        "exit status: CMD's; 1 when CMD succeeded but a node failed; 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _selection_arguments(serve)
    group = serve.add_argument_group("the registry")
    group.add_argument(
        "--namespace",
        default="k8s.io",
        metavar="NS",
        help="containerd namespace images land in (default k8s.io)",
    )
    group.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="127.0.0.1:PORT",
        help="loopback address (default: a free port)",
    )
    group.add_argument(
        "--containerd-socket", type=_node_path, metavar="PATH", help="containerd socket on the nodes"
    )
    group.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="containerd deadline"
    )
    _ssh_arguments(serve)
    _output_arguments(serve)
    serve.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")


def _gc_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = commands.add_parser(
        "gc",
        help="remove what interrupted runs left on nodes",
        description="Delete nodeload's leases of runs that are gone (killed, or that lost the node)\n"
        "and abort its uploads that stopped moving, on each selected node: what only they pinned\n"
        "becomes collectable by containerd. A live push (from here or elsewhere) is left alone.",
        epilog="examples:\n"
        "  nodeload gc --all-nodes --dry-run\n"
        "  nodeload gc --node worker-1 --older-than 30m\n\n"
        "exit status: 0 every node looked through, 1 a node could not be, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _selection_arguments(gc)
    group = gc.add_argument_group("what to collect")
    group.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="look only in this containerd namespace, repeatable (default: every namespace)",
    )
    group.add_argument(
        "--older-than",
        type=duration,
        default=None,
        metavar="AGE",
        help="leases of runs on other machines and uploads idle this long count as abandoned: 90s, "
        "30m, 1h, 2d (default 1h)",
    )
    group.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    group.add_argument(
        "--containerd-socket", type=_node_path, metavar="PATH", help="containerd socket on the nodes"
    )
    group.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="containerd deadline"
    )
    _ssh_arguments(gc)
    _output_arguments(gc)


def _images_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = commands.add_parser(
        "images",
        help="which nodes hold which version of an image",
        description="For each IMAGE (every image of the namespace when none is given), named as push\n"
        "names it: the nodes that hold it, under which image ID and manifest, its size there, whether\n"
        "it is unpacked for CRI's snapshotter and whether CRI sees it. A node holding another ID than\n"
        "the most recently written copy is marked: it has the old version. Nothing is written.",
        epilog="examples:\n"
        "  nodeload images myapp:dev --all-nodes\n"
        "  nodeload images --node worker-1 --node worker-2 --json\n\n"
        "exit status: 0 every node was read, 1 a node could not be, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    images.add_argument("images", nargs="*", metavar="IMAGE")
    _selection_arguments(images)
    _node_store_arguments(images, "nodes read at once")
    _ssh_arguments(images)
    _output_arguments(images)


def _rm_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rm = commands.add_parser(
        "rm",
        help="remove images from nodes",
        description="Delete each IMAGE's record on the selected nodes, with the entries CRI keeps for it\n"
        "(unless another name of the same image stays), then run containerd's garbage collection and\n"
        "say how many bytes it freed per node. An image that a container uses (kubelet's, from CRI's\n"
        "list; or a ctr/nerdctl container made from it) is refused unless --force.",
        epilog="examples:\n"
        "  nodeload rm myapp:dev --all-nodes\n"
        "  nodeload rm myapp:old myapp:older --node worker-1 --dry-run --json\n\n"
        "exit status: 0 removed (or absent) everywhere, 1 a node failed or an image was refused, "
        "2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    _selection_arguments(rm)
    group = _node_store_arguments(rm, "nodes worked on at once")
    group.add_argument("--force", action="store_true", help="remove images that containers use too")
    group.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    _ssh_arguments(rm)
    _output_arguments(rm)


def _node_store_arguments(parser: argparse.ArgumentParser, parallel: str) -> argparse._ArgumentGroup:
    """--namespace, --containerd-socket, --timeout, --parallel of the commands that read a store."""
    group = parser.add_argument_group("containerd")
    group.add_argument(
        "--namespace", default="k8s.io", metavar="NS", help="containerd namespace (default k8s.io)"
    )
    group.add_argument(
        "--containerd-socket", type=_node_path, metavar="PATH", help="containerd socket on the nodes"
    )
    group.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="containerd deadline"
    )
    group.add_argument(
        "--parallel",
        type=_positive,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"{parallel} (default {DEFAULT_PARALLEL})",
    )
    return group


def _cache_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser("cache", help="manage the local layer cache")
    actions = cache.add_subparsers(dest="cache_verb", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="drop cached layers",
        description="Drop layers of the local cache (${XDG_CACHE_HOME:-~/.cache}/nodeload) unused for\n"
        "--older-than, then the least recently used until it holds at most --max-size.\n"
        "With neither, everything goes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("--older-than", type=duration, metavar="AGE", help="unused this long: 12h, 30d...")
    prune.add_argument("--max-size", type=size, metavar="SIZE", help="keep at most this much: 500M, 10G...")
    _output_arguments(prune)


def _sandbox_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = commands.add_parser("sandbox", help="throwaway test nodes (needs nodeload[sandbox])")
    actions = sandbox.add_subparsers(dest="sandbox_verb", required=True, metavar="ACTION")
    compose = actions.add_parser(
        "compose",
        help="write a compose file of test nodes",
        description="Write DIR/docker-compose.yml: node-1..node-N, node-k3s (k3s's socket), a bastion\n"
        "and node-internal behind it, all sshd + containerd + CRI, with the SSH keys they trust.\n"
        "Bring it up with pytest-docker's docker_services and nodeload's nodeload_compose fixture,\n"
        "or with docker compose up -d. The node image is built first if this machine lacks it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for verb, text in (
        ("up", "start throwaway nodes that stay until down"),
        ("down", "remove the nodes of up, and their files"),
        ("status", "show the nodes of up and how to reach them"),
    ):
        kept = actions.add_parser(
            verb,
            help=text,
            description="up: start N sandbox nodes (sshd + containerd + CRI in containers) that stay,\n"
            "through docker restarts, on fixed 127.0.0.1 ports, until down; it writes an ssh_config and\n"
            "known_hosts for them (ssh -F FILE node-1; nodeload push IMAGE -F FILE --node node-1).\n"
            "down: remove them. status: their containers and files (exit 1 when none is up).\n"
            "variants: plain, k3s (containerd at k3s's socket), sudo (login ubuntu, sudo -n),\n"
            "bastion (reached only through a jump host).",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        kept.add_argument("--name", default="nodeload", help="the sandbox's name (default nodeload)")
        if verb == "up":
            kept.add_argument("--nodes", type=int, default=2, metavar="N", help="how many nodes (default 2)")
            kept.add_argument(
                "--variant",
                action="append",
                default=[],
                metavar="VARIANT",
                dest="variants",
                help="repeatable: the kind of each node in order, the last for the rest (default plain)",
            )
        _output_arguments(kept)
    compose.add_argument("directory", type=Path, metavar="DIR")
    compose.add_argument("--nodes", type=int, default=2, metavar="N", help="plain nodes (default 2)")
    _output_arguments(compose)
    cluster = actions.add_parser(
        "cluster",
        help="a real Kubernetes of test nodes",
        description="up: build kube-apiserver, kubelet, kube-controller-manager and kube-scheduler from\n"
        "Debian's kubernetes source package once (~/.cache/nodeload/k8s; 10-15 minutes the first\n"
        "time), run the control plane on this machine on a private Docker network and kubelet in\n"
        "N node containers, and print the admin kubeconfig; it runs until down.\n"
        "build: only build (or find) the binaries. down: stop and remove everything of cluster NAME.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cluster.add_argument("cluster_action", choices=("up", "down", "build"), metavar="up|down|build")
    cluster.add_argument("--name", default="nodeload", help="the cluster's name (default nodeload)")
    cluster.add_argument("--nodes", type=int, default=2, metavar="N", help="kubelet nodes (default 2)")
    cluster.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USER",
        dest="users",
        help="repeatable: a token user with a kubeconfig and no rights (default developer)",
    )
    _output_arguments(cluster)


def _completion_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = commands.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description="Print a script that makes the shell complete nodeload's commands, options, image names\n"
        "(from the local Docker engine) and node names (from the current selection: the inventory,\n"
        "the cluster, else ~/.ssh/config's hosts). Source it from the shell's startup file.",
        epilog="examples:\n"
        "  echo 'eval \"$(nodeload completion bash)\"' >> ~/.bashrc\n"
        "  echo 'eval \"$(nodeload completion zsh)\"' >> ~/.zshrc\n"
        "  nodeload completion fish > ~/.config/fish/completions/nodeload.fish",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument(
        "shell", choices=("bash", "zsh", "fish"), metavar="bash|zsh|fish", help="the shell to complete in"
    )
    completion.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    completion.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d`` (a bare number is seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid age {text!r}: a number with s, m, h or d (30m, 1h, 2d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


def size(text: str) -> int:
    """``500M``, ``10G``, ``1.5GiB``, ``1000000`` (bytes), 1024-based as du and df print them."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: e.g. 500M, 10G")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


def _selection_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group(
        "nodes",
        "One source of nodes per run: --node alone lists SSH destinations; with --inventory it names "
        "inventory hosts; with a kubeconfig (--kubeconfig, --context, -l, --all-nodes) Kubernetes nodes.",
    )
    group.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NODE",
        help="target node, repeatable: [USER@]HOST[:PORT] (HOST may be an ~/.ssh/config alias), "
        "or a node name of the inventory or cluster",
    )
    group.add_argument("--all-nodes", action="store_true", help="every node of the cluster or inventory")
    group.add_argument("--inventory", type=Path, metavar="FILE", help="an Ansible inventory (INI or YAML)")
    group.add_argument(
        "--limit", metavar="PATTERN", help="Ansible host pattern: groups or hosts, a:b, a:&b, a:!b"
    )
    group.add_argument(
        "--kubeconfig", type=Path, metavar="FILE", help="default $KUBECONFIG, else ~/.kube/config"
    )
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    group.add_argument(
        "-l", "--selector", metavar="SELECTOR", help="Kubernetes label selector, as kubectl takes it"
    )
    group.add_argument(
        "--exclude-control-plane", action="store_true", help="skip nodes labelled as control plane"
    )
    group.add_argument(
        "--address-type",
        choices=("InternalIP", "ExternalIP", "Hostname", "name"),
        default="InternalIP",
        help="which address of a Kubernetes node SSH goes to (default InternalIP; Hostname or name "
        "let ~/.ssh/config aliases do the rest)",
    )
    group.add_argument(
        "--reach",
        "--via",  # its name before 0.2
        dest="reach",
        choices=("auto", "ssh", "agent"),
        default="auto",
        help="how Kubernetes nodes are reached: ssh, agent (each node's nodeload-agent pod, through "
        "the API server: no SSH needed; see charts/nodeload-agent), or auto (default: ssh, and the "
        "agent for nodes without an address of --address-type)",
    )
    group.add_argument(
        "--agent-namespace",
        default="nodeload",
        metavar="NS",
        help="namespace of the nodeload-agent pods (default nodeload)",
    )
    group.add_argument("--kind-cluster", metavar="NAME", help="the node containers of a local kind cluster")
    group.add_argument(
        "--k3d-cluster", metavar="NAME", help="the server and agent containers of a local k3d cluster"
    )
    group.add_argument("--ssh-user", metavar="USER", help="SSH login for nodes that name none")
    group.add_argument(
        "--sudo",
        action="store_true",
        help="use passwordless sudo on nodes whose login may not open containerd's socket",
    )


def _push_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group("what is written")
    group.add_argument(
        "--namespace",
        default="k8s.io",
        metavar="NS",
        help="containerd namespace (default k8s.io, what kubelet uses; "
        "'default' for nerdctl, 'moby' for Docker's containerd store)",
    )
    group.add_argument(
        "--name", metavar="REF", help="image name on the node (default: the source's own name)"
    )
    group.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="pick from a multi-platform image (default: the node's platform)",
    )
    group.add_argument(
        "--containerd-socket", type=_node_path, metavar="PATH", help="containerd socket on the node"
    )
    group.add_argument("--snapshotter", help="snapshotter to unpack into (default: CRI's, else overlayfs)")
    group.add_argument(
        "--no-unpack", action="store_true", help="store the content only; do not unpack layers"
    )
    group.add_argument(
        "--src-tls-verify",
        type=_boolean,
        default=True,
        metavar="BOOL",
        help="verify a docker:// registry's TLS certificate (default true; false also allows plain HTTP)",
    )
    group.add_argument(
        "--source-socket",
        metavar="PATH",
        help="the local containerd of containerd:REF images (default $CONTAINERD_ADDRESS, else "
        "/run/containerd/containerd.sock)",
    )
    group.add_argument(
        "--source-namespace",
        metavar="NS",
        help="its namespace: default (nerdctl), moby (Docker), k8s.io, buildkit... (default "
        "$CONTAINERD_NAMESPACE, else default)",
    )
    group.add_argument(
        "--store",
        "--target",  # its name before 0.2
        dest="store",
        choices=("containerd", "docker"),
        default="containerd",
        help="what is written on the nodes: containerd (default) or a Docker Engine (its socket over SSH; "
        "--containerd-socket then names the Docker socket)",
    )
    group.add_argument(
        "--export",
        choices=("auto", "save", "push"),
        default="auto",
        help="how a Docker-engine image leaves the engine: save (docker save; nodeload compresses "
        "and caches), push (the engine's docker push into a loopback endpoint over the nodes: only "
        "changed layers leave it), auto (push, unless that would resend layers a node holds)",
    )
    group.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"nodes worked on at once (default {DEFAULT_PARALLEL})",
    )
    group.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="K",
        help="push to K seed nodes (those holding the most of the image); every other node whose "
        "containerd pulls through a registry mirror (Spegel, k3s's embedded registry) pulls from its "
        "peers instead (default: 1 when there are several nodes; 0 pushes to every node)",
    )
    group.add_argument(
        "--persist",
        type=_duration,
        default=os.environ.get("NODELOAD_PERSIST") or AUTO,
        metavar="DURATION",
        help="hand the push to a background session of yours that stays DURATION (e.g. 10m, 1h, "
        "600s) after its last push, with nodeload loaded and the nodes' SSH connections open, like "
        "ssh's ControlPersist; the first such push starts it (default: $NODELOAD_PERSIST, else 10m "
        "from a terminal and off under CI or without one; off: none)",
    )
    group.add_argument(
        "--no-persist",
        dest="persist",
        action="store_const",
        const=None,
        help="push in this process, with no background session (as --persist off)",
    )
    group.add_argument(
        "--restart",
        action="store_true",
        help="nodes from a kubeconfig: after the push, restart (as kubectl rollout restart) the "
        "Deployments, StatefulSets and DaemonSets whose pods on the pushed nodes run an older image "
        "of a pushed name, and wait for their rollouts; bare pods and Jobs are listed, not touched",
    )
    group.add_argument(
        "--rollout-timeout",
        type=_seconds,
        default=DEFAULT_ROLLOUT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --restart: how long to wait for the rollouts (default {DEFAULT_ROLLOUT_TIMEOUT:.0f})",
    )
    group.add_argument(
        "--mirror-check",
        type=_on_off,
        default=True,
        metavar="on|off",
        help="read each node's mirror configuration before pulling from peers (default on; off "
        "trusts that every node has one)",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="show the nodes and how each would be reached (as nodeload nodes), push nothing",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="reconnect this many times when a node's connection or containerd is lost mid-push, "
        f"resuming where it stopped (default {DEFAULT_RETRIES}; 0 fails at once)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long containerd may leave a call unanswered or an upload without progress "
        f"(default {DEFAULT_TIMEOUT:.0f})",
    )


def _ssh_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group("ssh")
    group.add_argument(
        "-i",
        "--identity",
        type=Path,
        metavar="FILE",
        help="SSH private key, in addition to ssh-agent and ~/.ssh/config IdentityFile",
    )
    group.add_argument(
        "-F", "--ssh-config", type=Path, metavar="FILE", help="SSH config file (default ~/.ssh/config)"
    )
    group.add_argument(
        "--known-hosts", type=Path, metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)"
    )
    group.add_argument(
        "-J",
        "--jump",
        metavar="[USER@]HOST[:PORT]",
        help="reach the nodes through this jump host (comma-separated for several), as ssh -J",
    )
    group.add_argument(
        "--insecure-skip-host-key-check",
        action="store_true",
        help="do not verify node host keys (unsafe: anyone on the path can impersonate a node)",
    )


def _duration(text: str) -> float | Auto | None:
    """``10m``, ``1h``, ``600s``, ``600`` -> seconds; ``off``/``0`` -> None (no persistent
    session); ``on`` -> the default duration; ``auto`` -> :data:`AUTO`."""
    text = text.strip().lower()
    if text in ("off", "no", "false", "0"):
        return None
    if text in ("on", "yes", "true"):
        return DEFAULT_PERSIST
    if text == "auto":
        return AUTO
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: e.g. 10m, 1h, 600s (up to 24h), on, off or auto"
        )
    return value


def _seeds(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid --seeds {text!r}: a number of nodes, or auto")
    return int(text)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: on or off")
    return text == "on"


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: true or false")


def _node_path(text: str) -> str:
    from nodeload.addresses import node_path_problem

    why = node_path_problem(text)
    if why:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a socket path on the nodes: {why}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: 1 or more")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: a number above 0")
    return value
