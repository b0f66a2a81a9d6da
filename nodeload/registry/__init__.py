"""``nodeload serve``: a short-lived OCI registry whose storage is the selected nodes' containerd.

Any registry client (``docker push``, ``skopeo copy``, buildx, crane...) pushes into it; blobs
stream to the nodes that lack them as they arrive, and a manifest pushed by tag becomes an
unpacked, named, CRI-visible image on every node. Loopback only, per-run credentials.
"""
