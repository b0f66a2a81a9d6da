"""Targets take an image and put it somewhere: a node's containerd (a Docker engine next)."""

from nodeload.targets.base import CRI_NAMESPACE, PreparedImage, Target, TargetOpener, TargetOptions

__all__ = ["CRI_NAMESPACE", "PreparedImage", "Target", "TargetOpener", "TargetOptions"]
