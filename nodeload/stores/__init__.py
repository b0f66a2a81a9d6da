"""Image stores: what is written on a node (its containerd under a lease, ctr import when nothing
else reaches it, or its Docker Engine), behind one protocol, :class:`ImageStore`."""

from nodeload.stores.base import CRI_NAMESPACE, ImageStore, PreparedImage, StoreOpener, WriteOptions

__all__ = ["CRI_NAMESPACE", "ImageStore", "PreparedImage", "StoreOpener", "WriteOptions"]
