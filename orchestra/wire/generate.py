"""Regenerate the committed wire code from proto/orchestra/v1/*.proto.

Run ``python -m orchestra.wire.generate`` after editing a .proto file. The test suite
calls :func:`generate` into a temporary directory and fails if the result differs
from what is committed, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
WIRE_DIR = Path(__file__).resolve().parent

# protoc writes imports as the .proto package path ("from orchestra.v1 import x_pb2");
# the generated modules live in orchestra.wire instead.
_IMPORT_RE = re.compile(r"^from orchestra\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir."""
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("orchestra/v1/*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {PROTO_ROOT}")
    include = resources.files("grpc_tools") / "_proto"
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        for produced in sorted((Path(tmp) / "orchestra" / "v1").iterdir()):
            target = out_dir / produced.name
            target.write_text(_IMPORT_RE.sub("from orchestra.wire import ", produced.read_text()))
            written.append(target)
    return written


def main() -> int:
    for path in generate(WIRE_DIR):
        sys.stdout.write(f"wrote {path.relative_to(REPO_ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
