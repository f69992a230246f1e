"""Generate the Python gRPC stubs from proto/asr/v1/*.proto into the package proto/gen (git-ignored).

    python -m proto.generate

`server` and `clients` call `ensure_stubs()`, which regenerates when a stub is missing or older
than its .proto, so a fresh checkout needs no manual step; the Makefile's setup runs it too.
The stubs are generated flat (proto/gen/recognizer_pb2.py) and their one cross-import made
relative, so they import as `proto.gen.recognizer_pb2` without clashing with our `asr` package.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
OUT = PROTO_ROOT / "gen"
PROTOS = sorted(PROTO_ROOT.glob("asr/v1/*.proto"))


def _stale() -> bool:
    for proto in PROTOS:
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            stub = OUT / (proto.stem + suffix)
            if not stub.exists() or stub.stat().st_mtime < proto.stat().st_mtime:
                return True
    return False


def generate() -> None:
    from grpc_tools import protoc

    OUT.mkdir(exist_ok=True)
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    source = PROTO_ROOT / "asr" / "v1"
    args = ["protoc", f"-I{source}", f"-I{include}", f"--python_out={OUT}", f"--grpc_python_out={OUT}",
            f"--pyi_out={OUT}", *map(str, PROTOS)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[str(p) for p in PROTOS]}")
    for proto in PROTOS:
        stub = OUT / f"{proto.stem}_pb2_grpc.py"
        code = stub.read_text().replace(f"import {proto.stem}_pb2 as", f"from . import {proto.stem}_pb2 as")
        stub.write_text(code)
    (OUT / "__init__.py").touch()


def ensure_stubs():
    """The generated modules (recognizer_pb2, recognizer_pb2_grpc), regenerated first if stale."""
    if _stale():
        generate()
    return importlib.import_module("proto.gen.recognizer_pb2"), importlib.import_module("proto.gen.recognizer_pb2_grpc")


if __name__ == "__main__":
    generate()
    print(f"wrote stubs for {[p.name for p in PROTOS]} into {OUT}")
