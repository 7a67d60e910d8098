"""Generate the Python protobuf modules (and type stubs) from proto/.

Usage: python scripts/gen_proto.py [OUT_DIR]   (default: src/facteur/proto)
The committed output must equal a fresh run; tests/unit/test_proto_drift.py checks it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    for source in sources:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(source.relative_to(PROTO_DIR)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {source}")
    generated = sorted(p for p in out_dir.rglob("*_pb2.py*"))
    for path in generated:
        package = path.parent
        while package != out_dir:
            (package / "__init__.py").touch()
            package = package.parent
    return generated


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src" / "facteur" / "proto"
    for path in generate(target):
        print(path.relative_to(target))
