"""The committed generated code must be exactly what grpcio-tools makes from the protos."""

from __future__ import annotations

from pathlib import Path

from orchestra.wire import generate


def test_generated_wire_code_matches_the_protos(tmp_path: Path) -> None:
    produced = generate.generate(tmp_path)
    assert produced, "no files generated"
    committed = {p.name for p in generate.WIRE_DIR.iterdir()
                 if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))}
    assert {p.name for p in produced} == committed
    stale = [p.name for p in produced
             if p.read_text() != (generate.WIRE_DIR / p.name).read_text()]
    assert not stale, f"regenerate with `python -m orchestra.wire.generate`: {stale}"
