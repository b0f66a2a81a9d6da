"""Regenerate nodeload's containerd/CRI gRPC modules from its own .proto subset.

Usage: python scripts/gen_protos.py [OUTPUT_ROOT]

Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py next to each .proto under
nodeload/containerd/api (or under OUTPUT_ROOT, used by the test that checks
the committed modules are current).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("nodeload/containerd/api")


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every .proto; return the generated files."""
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


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for path in generate(root):
        print(path)
