"""Regenerate the committed gRPC/protobuf modules from ``mesh.proto``.

Run ``python -m protocol.codegen`` after editing the proto. The generated
files are committed so that installing bupmesh needs no protoc; a test checks
that regeneration gives the same bytes, so the two never drift apart.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTOCOL_DIR = Path(__file__).resolve().parent
GENERATED = ("mesh_pb2.py", "mesh_pb2.pyi", "mesh_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules for ``protocol/mesh.proto`` under ``out_dir/protocol``."""
    from grpc_tools import protoc  # test/dev dependency only

    root = PROTOCOL_DIR.parent
    (out_dir / "protocol").mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTOCOL_DIR / "mesh.proto"),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    return [out_dir / "protocol" / name for name in GENERATED]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = PROTOCOL_DIR / path.name
            target.write_bytes(path.read_bytes())
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
