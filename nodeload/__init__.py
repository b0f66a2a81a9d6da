"""nodeload: push container images straight into nodes' containerd, sending only what each node lacks."""

__version__ = "0.1.0"
