"""Stand-ins for services that do not exist on the test machine (kube-apiserver)."""
