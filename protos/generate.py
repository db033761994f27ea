"""Regenerates the Python gRPC stubs in server/_proto from protos/sift/v1/*.proto.

Run: python protos/generate.py   (needs the `dev` extra, which pins grpcio-tools)

protoc writes absolute imports (`from sift.v1 import ...`); they are rewritten to live under
`server._proto` so the stubs ship inside the server package. tests/server/test_proto_stubs.py
regenerates into a temporary directory and fails when the committed stubs are stale.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
STUB_PACKAGE = "server._proto"


def generate(out_dir: Path) -> list[Path]:
    """Writes the stubs for every .proto under protos/ into out_dir; returns the files written."""
    from grpc_tools import protoc  # dev-only dependency, imported lazily

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {protos}")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            text = re.sub(r"^from sift\.", f"from {STUB_PACKAGE}.sift.", src.read_text(), flags=re.M)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text)
            written.append(dst)
    for pkg in {p.parent for p in written} | {out_dir / "sift"}:
        (pkg / "__init__.py").touch()
    return written


if __name__ == "__main__":
    files = generate(ROOT / "server" / "_proto")
    print(f"wrote {len(files)} files", file=sys.stderr)
