"""The committed gRPC modules must be what scripts/gen_protos.py makes from the .proto files."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_generated_modules_are_current(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install -e .[dev])")
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path)
    assert fresh, "no modules generated"
    committed_dir = REPO / "nodeload" / "containerd" / "api"
    for path in fresh:
        committed = committed_dir / path.name
        assert committed.exists(), f"{path.name} is not committed: run python scripts/gen_protos.py"
        assert committed.read_text() == path.read_text(), (
            f"{path.name} is stale: run python scripts/gen_protos.py"
        )
    assert {p.name for p in committed_dir.glob("*_pb2*.py*")} == {p.name for p in fresh}
