"""The committed stubs must be exactly what grpcio-tools generates from protos/ (stale stubs fail here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stubs_are_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    written = generate.generate(tmp_path)
    assert len(written) == 3 * len(list((ROOT / "protos").rglob("*.proto")))
    committed = ROOT / "server" / "_proto"
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        assert (committed / rel).read_text() == fresh.read_text(), (
            f"{rel} is stale: run python protos/generate.py"
        )
    committed_files = {p.relative_to(committed) for p in committed.rglob("*_pb2*.py*")}
    assert committed_files == {p.relative_to(tmp_path) for p in written}
