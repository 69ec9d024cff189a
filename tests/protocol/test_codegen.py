"""The committed generated modules are exactly what protoc makes of mesh.proto."""

from pathlib import Path

from protocol import codegen


def test_regeneration_gives_committed_files(tmp_path: Path) -> None:
    for generated in codegen.generate(tmp_path):
        committed = codegen.PROTOCOL_DIR / generated.name
        assert committed.read_bytes() == generated.read_bytes(), (
            f"{committed.name} is stale: run python -m protocol.codegen"
        )
