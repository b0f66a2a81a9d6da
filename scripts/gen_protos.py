"""Regenerate nodeload's containerd/CRI gRPC modules from its own .proto subset.

Usage: python scripts/gen_protos.py [OUTPUT_ROOT]      (``make protos`` runs it in .venv-protos)
       python scripts/gen_protos.py --requirement     (prints the pinned generator)

Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py next to each .proto under
nodeload/containerd/api (or under OUTPUT_ROOT).

The generator is pinned (pyproject's ``protos`` dependency group) to an old grpcio-tools on purpose:
generated code requires a protobuf runtime at least as new as the protoc that made it (and,
from grpcio-tools 1.63, a grpcio as new as the plugin), so an old generator is what lets
nodeload declare low floors and install beside other libraries that pin protobuf 4.x-6.x.
Newer runtimes still load this code (tests/unit/test_protos_current.py checks both ends).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata, resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("nodeload/containerd/api")


def generator_requirement() -> str:
    """The pinned generator, ``grpcio-tools==X.Y.Z``, from pyproject's ``protos`` group."""
    (pin,) = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["protos"]
    return str(pin)


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every .proto; return the generated files."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(REPO)) for p in (REPO / PROTO_DIR).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{REPO}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / PROTO_DIR).glob("*_pb2*.py*"))


def main(argv: list[str]) -> None:
    wanted = generator_requirement()
    if argv[1:] == ["--requirement"]:
        print(wanted)
        return
    installed = f"grpcio-tools=={metadata.version('grpcio-tools')}"
    if installed != wanted:
        raise SystemExit(
            f"{installed} is installed, but the modules are generated with {wanted}: run make protos"
        )
    root = Path(argv[1]) if len(argv) > 1 else REPO
    for path in generate(root):
        print(path)


if __name__ == "__main__":
    main(sys.argv)
