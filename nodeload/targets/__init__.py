"""Targets take an image and put it somewhere: a node's containerd today."""

from nodeload.targets.containerd import ContainerdTarget, TargetOptions

__all__ = ["ContainerdTarget", "TargetOptions"]
