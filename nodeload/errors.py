"""A small, flat hierarchy of errors that carry what the user needs to act."""

from __future__ import annotations


class NodeloadError(Exception):
    """Base of every error nodeload reports to the user (exit status 1)."""


class InternalError(NodeloadError):
    """Something nodeload did not foresee (a bug): reported as such, with DEBUG logging for details."""


class UsageError(NodeloadError):
    """The command line or an argument is wrong (exit status 2)."""


class SourceError(NodeloadError):
    """The source image cannot be read: missing, unreadable or malformed."""


class ImageNotFound(SourceError):
    """The named image does not exist in the source."""


class LocalImageNotFound(ImageNotFound, UsageError):
    """The named image is not on this machine: found out before any node is contacted, and told
    as a usage error (exit status 2), with the closest names there are."""


class RegistryAuthFailed(SourceError):
    """A registry refused access: credentials missing, wrong, or not allowed to pull."""


class PlatformNotFound(NodeloadError):
    """An index has no manifest for the requested platform."""


class NodeSourceError(NodeloadError):
    """The nodes to push to cannot be determined (kubeconfig, inventory, Kubernetes API)."""


class NodeError(NodeloadError):
    """Something went wrong with one node; other nodes carry on.

    ``bytes_sent``: blob bytes that crossed the wire before the failure (they count in reports).
    """

    bytes_sent: int = 0


class NodeUnreachable(NodeError):
    """The node's SSH endpoint cannot be reached."""


class HostKeyRejected(NodeError):
    """The node's host key is unknown or changed; nothing was sent."""


class AuthenticationFailed(NodeError):
    """SSH authentication to the node failed."""


class ContainerdUnavailable(NodeError):
    """No usable containerd socket on the node (missing, or no permission)."""


class ContainerdTimeout(NodeError):
    """containerd on the node stopped answering (a call's deadline passed)."""


class ConnectionLost(NodeError):
    """The connection to the node (or its containerd) broke during the push."""


class LocalError(NodeError):
    """Something failed on this machine, not on the node (a local socket, a file)."""


class NodeDiskFull(NodeError):
    """The node ran out of disk space while receiving content."""


class PushFailed(NodeError):
    """containerd refused an operation during the push."""


class BlobMismatch(PushFailed):
    """What the source streamed for a blob does not match the blob's digest."""
