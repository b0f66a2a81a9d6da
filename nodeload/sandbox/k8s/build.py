"""Kubernetes binaries built once from Debian's ``kubernetes`` source package, then cached.

No prebuilt Kubernetes can be downloaded on the machines this project runs on, but Debian's
source package (1.20.2 with its whole ``vendor/`` tree) builds offline with Debian's Go. The
build follows the package's own ``debian/rules`` (a GOPATH whose ``src/k8s.io/kubernetes`` is
the tree, ``CGO_ENABLED=0``, ``make WHAT=...``), adds the pause binary from the tree's
``build/pause`` (static, as its Makefile builds it), and keeps only the binaries: the tree and
Go's cache (~3 GB) are removed. A cold build takes 10-15 minutes on 2 cores; afterwards
:func:`ensure_binaries` is a lookup.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nodeload.sandbox.node_image import SandboxError, cache_dir

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "1.20.2"
SOURCE_PACKAGE = "kubernetes"
# The control plane and kubelet; kubectl is not needed (tests use the Python client, and the
# host's kubectl where a user wants one).
COMPONENTS = ("kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler")
PAUSE = "pause"
MANIFEST = "MANIFEST.json"
# What ensure-kubernetes.sh installs for the build.
BUILD_TOOLS = ("apt-get", "dpkg-source", "go", "rsync", "make", "gcc")


@dataclass(frozen=True)
class Binaries:
    """The built binaries of one Kubernetes version, in their cache directory."""

    directory: Path
    version: str
    digests: dict[str, str]

    def path(self, name: str) -> Path:
        """The binary ``name`` (``kube-apiserver``, ``kubelet``, ..., ``pause``)."""
        return self.directory / name


def binaries_dir(version: str = KUBERNETES_VERSION) -> Path:
    """``~/.cache/nodeload/k8s/VERSION``: where the binaries of ``version`` are kept."""
    return cache_dir() / "k8s" / version


def build_log_path(version: str = KUBERNETES_VERSION) -> Path:
    """The log of the last build of ``version`` (kept next to the cache)."""
    return cache_dir() / "k8s" / f"build-{version}.log"


def cached_binaries(version: str = KUBERNETES_VERSION) -> Binaries | None:
    """The cached binaries of ``version``, or None when they are not (all) there."""
    directory = binaries_dir(version)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    digests = manifest.get("sha256", {}) if isinstance(manifest, dict) else {}
    names = (*COMPONENTS, PAUSE)
    if not isinstance(digests, dict) or any(not (directory / n).is_file() or n not in digests for n in names):
        return None
    return Binaries(directory, version, {n: str(digests[n]) for n in names})


def ensure_binaries(version: str = KUBERNETES_VERSION, *, nice: int = 0) -> Binaries:
    """The binaries of ``version``: from the cache, else built now (10-15 minutes on 2 cores).

    A build another process is running is waited for, not repeated.

    Args:
        version: The Kubernetes version; only Debian's (1.20.2) is known to build here.
        nice: Niceness of the build's processes (a build in the background of a test run).

    Raises:
        SandboxError: A build tool is missing, the source package is not the version asked
            for, or the build failed (the message ends with its log).
    """
    found = cached_binaries(version)
    if found is not None:
        return found
    with _build_lock(version):
        found = cached_binaries(version)
        if found is not None:  # built by the process we waited for
            return found
        return _build(version, nice)


@contextlib.contextmanager
def _build_lock(version: str) -> Iterator[None]:
    lock_path = cache_dir() / "k8s" / f"build-{version}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_running(version: str = KUBERNETES_VERSION) -> bool:
    """Whether a process holds the build lock of ``version`` (a build under way)."""
    lock_path = cache_dir() / "k8s" / f"build-{version}.lock"
    if not lock_path.exists():
        return False
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def _build(version: str, nice: int) -> Binaries:
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SandboxError(
            f"building Kubernetes {version} needs {', '.join(missing)}: run scripts/ensure-kubernetes.sh"
        )
    parent = binaries_dir(version).parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"build-{version}-*"):  # the tree of a build that was killed
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    log_path = build_log_path(version)
    started = time.monotonic()
    # The tree and Go's cache take ~3 GB: next to the cache (same filesystem), removed after.
    with (
        tempfile.TemporaryDirectory(prefix=f"build-{version}-", dir=parent) as work,
        open(log_path, "w") as build_log,
    ):
        runner = _Runner(build_log, log_path, nice)
        tree = _fetch_source(Path(work), version, runner)
        _make(tree, version, runner)
        staging = Path(work) / "out"
        staging.mkdir()
        for name in COMPONENTS:
            shutil.copy2(tree / "_output" / "bin" / name, staging / name)
        pause_c = tree / "build" / "pause" / "linux" / "pause.c"
        flags = ["-Os", "-Wall", "-static", f"-DVERSION=v{version}-nodeload"]
        runner.run(["gcc", *flags, "-o", str(staging / PAUSE), str(pause_c)], cwd=tree)
        digests = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
        manifest = {
            "version": version,
            "source": _source_version(tree),
            "go": subprocess.run(
                ["go", "version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "sha256": digests,
            "seconds": round(time.monotonic() - started),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        target = binaries_dir(version)
        if target.exists():  # an incomplete directory (no manifest): a copy of a killed build
            shutil.rmtree(target)
        staging.rename(target)  # atomic: the manifest appears with every binary
    log.info("built Kubernetes %s in %.0f s into %s", version, time.monotonic() - started, target)
    found = cached_binaries(version)
    if found is None:
        raise SandboxError(f"the build of Kubernetes {version} left no complete {target}")
    return found


class _Runner:
    """Runs the build's commands with their output in the build log."""

    def __init__(self, build_log: TextIO, log_path: Path, nice: int) -> None:
        self._log = build_log
        self._log_path = log_path
        self._nice = nice

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        log.info("k8s build: %s", " ".join(argv))
        self._log.write(f"$ {' '.join(argv)}\n")
        self._log.flush()
        niced = ["nice", "-n", str(self._nice), *argv] if self._nice else argv
        proc = subprocess.run(
            niced,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if proc.returncode != 0:
            self._log.flush()
            tail = self._log_path.read_text(errors="replace")[-3000:]
            raise SandboxError(
                f"{argv[0]} failed ({proc.returncode}) building Kubernetes; {self._log_path}:\n{tail}"
            )


def _fetch_source(work: Path, version: str, runner: _Runner) -> Path:
    """``apt-get source kubernetes`` (with Debian's patches applied) into ``work``."""
    runner.run(["apt-get", "source", "-qq", SOURCE_PACKAGE], cwd=work)
    trees = [p for p in work.iterdir() if p.is_dir() and p.name.startswith(f"{SOURCE_PACKAGE}-")]
    if len(trees) != 1:
        raise SandboxError(f"apt-get source {SOURCE_PACKAGE} left {[p.name for p in trees]} in {work}")
    tree = trees[0]
    # Debian's version can say more than the code ("1.20.5+really1.20.2"): the tree's own counts.
    upstream = tree.name.removeprefix(f"{SOURCE_PACKAGE}-").rpartition("really")[2]
    if upstream != version:
        raise SandboxError(
            f"apt-get source {SOURCE_PACKAGE} gives Kubernetes {upstream}, not {version} "
            "(another Debian release?)"
        )
    return tree


def _make(tree: Path, version: str, runner: _Runner) -> None:
    gopath = tree / ".go"
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to("../../..")
    # The tarball has no .git: without this file the binaries would call themselves v0.0.0-master.
    major, minor, _ = version.split(".")
    version_file = tree / ".nodeload-version"
    version_file.write_text(
        f"KUBE_GIT_VERSION='v{version}'\nKUBE_GIT_MAJOR='{major}'\nKUBE_GIT_MINOR='{minor}'\n"
        "KUBE_GIT_TREE_STATE='archive'\nKUBE_GIT_COMMIT=''\n"
    )
    env = {
        "PATH": f"/usr/lib/go/bin:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tree / ".home"),
        "GOPATH": str(gopath),
        "CGO_ENABLED": "0",
        "KUBE_GIT_VERSION_FILE": str(version_file),
        "LANG": "C.UTF-8",
    }
    what = " ".join(f"cmd/{name}" for name in COMPONENTS)
    try:
        runner.run(["make", f"WHAT={what}"], cwd=tree, env=env)
    except SandboxError:
        # A first build without rsync leaves an empty code generator behind: start over once.
        generator = tree / "_output" / "bin" / "prerelease-lifecycle-gen"
        if not (generator.exists() and generator.stat().st_size == 0):
            raise
        shutil.rmtree(tree / "_output")
        runner.run(["make", f"WHAT={what}"], cwd=tree, env=env)


def _source_version(tree: Path) -> str:
    first = (tree / "debian" / "changelog").read_text().splitlines()[0]
    return first.split("(", 1)[1].split(")", 1)[0] if "(" in first else first


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def main(argv: list[str] | None = None) -> int:
    """``python -m nodeload.sandbox.k8s.build [--nice N]``: build (or find) the binaries; what a
    test session starts in the background while its other tests run."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nodeload.sandbox.k8s.build", description=main.__doc__)
    parser.add_argument("--nice", type=int, default=0, help="niceness of the build's processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Stopped (a test run that ended first): still remove the tree on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        binaries = ensure_binaries(nice=args.nice)
    except SandboxError as exc:
        print(f"nodeload: {exc}", file=sys.stderr)
        return 1
    print(binaries.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
