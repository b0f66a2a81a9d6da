"""The committed gRPC modules say what the .proto files say, and need no runtime newer than the
floors pyproject declares.

What is compared is what reaches the wire: messages, fields, enums and services, read from the
descriptors. The generated text is not, so a new grpcio-tools release changes nothing here;
only ``make protos`` (the pinned generator) writes the modules.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
API = REPO / "nodeload" / "containerd" / "api"
PROTOS = sorted(API.glob("*.proto"))


def _floor(package: str) -> Version:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in dependencies:
        requirement = Requirement(text)
        if requirement.name == package:
            (floor,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
            return floor
    raise AssertionError(f"{package} is not a dependency")


def _field(f: descriptor_pb2.FieldDescriptorProto) -> tuple[Any, ...]:
    oneof = f.oneof_index if f.HasField("oneof_index") else None
    return (f.name, f.number, f.label, f.type, f.type_name, oneof, f.proto3_optional)


def _message(m: descriptor_pb2.DescriptorProto) -> tuple[Any, ...]:
    return (
        m.name,
        tuple(_field(f) for f in m.field),
        tuple(_message(n) for n in m.nested_type),
        tuple(_enum(e) for e in m.enum_type),
        tuple(o.name for o in m.oneof_decl),
        m.options.map_entry,
    )


def _enum(e: descriptor_pb2.EnumDescriptorProto) -> tuple[Any, ...]:
    return (e.name, tuple((v.name, v.number) for v in e.value))


def _service(s: descriptor_pb2.ServiceDescriptorProto) -> tuple[Any, ...]:
    methods = tuple(
        (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in s.method
    )
    return (s.name, methods)


def _wire_shape(f: descriptor_pb2.FileDescriptorProto) -> tuple[Any, ...]:
    """What a .proto file means on the wire, whatever generator or protoc release read it."""
    return (
        f.name,
        f.package,
        tuple(f.dependency),
        tuple(_message(m) for m in f.message_type),
        tuple(_enum(e) for e in f.enum_type),
        tuple(_service(s) for s in f.service),
    )


def _committed(proto: Path) -> descriptor_pb2.FileDescriptorProto:
    module = importlib.import_module(f"nodeload.containerd.api.{proto.stem}_pb2")
    return descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)


def test_committed_modules_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools parses the .proto files (pip install -e .[dev])")
    from importlib import resources

    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    well_known = resources.files("grpc_tools") / "_proto"
    names = [str(p.relative_to(REPO)) for p in PROTOS]
    assert protoc.main(["protoc", f"-I{REPO}", f"-I{well_known}", f"--descriptor_set_out={out}", *names]) == 0
    parsed = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    assert sorted(parsed) == names
    for proto in PROTOS:
        name = str(proto.relative_to(REPO))
        assert _wire_shape(_committed(proto)) == _wire_shape(parsed[name]), (
            f"{proto.stem}_pb2.py does not match {proto.name}: run make protos"
        )


def test_every_service_method_has_its_stub() -> None:
    """Each method of each service is called by the path gRPC servers route on."""
    for proto in PROTOS:
        described = _committed(proto)
        stubs = (API / f"{proto.stem}_pb2_grpc.py").read_text()
        for service in described.service:
            for method in service.method:
                path = f"/{described.package}.{service.name}/{method.name}"
                assert f"'{path}'" in stubs, f"{proto.stem}_pb2_grpc.py lacks {path}: run make protos"


def test_generated_code_needs_nothing_newer_than_the_floors() -> None:
    """Generated code refuses runtimes older than its generator: the generator's versions must be
    at or under the floors pyproject declares (else pip installs a nodeload that cannot start)."""
    modules = sorted(API.glob("*_pb2.py"))
    assert len(modules) == len(PROTOS)
    for module in modules:
        header = re.search(r"^# Protobuf Python Version: (\S+)$", module.read_text(), re.MULTILINE)
        assert header, f"{module.name} names no protobuf version"
        assert Version(header[1]) <= _floor("protobuf"), (
            f"{module.name} is generated for protobuf {header[1]}, above the declared floor: run make protos"
        )
    for stubs in sorted(API.glob("*_pb2_grpc.py")):
        pinned = re.search(r"^GRPC_GENERATED_VERSION = '(\S+)'$", stubs.read_text(), re.MULTILINE)
        if pinned:  # generators from grpcio-tools 1.63 on refuse older grpcio
            assert Version(pinned[1]) <= _floor("grpcio"), f"{stubs.name} needs grpcio {pinned[1]}"


def test_the_protos_group_pins_its_generator() -> None:
    group = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["protos"]
    assert [Requirement(r).name for r in group] == ["grpcio-tools"]
    assert all(str(Requirement(r).specifier).startswith("==") for r in group), group
