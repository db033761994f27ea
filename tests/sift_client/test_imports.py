"""The client library is light: importing it loads grpc and the generated stubs, no server, model, torch or
training code."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_client_loads_only_grpc_and_the_stubs() -> None:
    code = "import sys, sift_client; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    server = [m for m in modules if m.split(".")[0] == "server"]
    assert server and all(m in ("server", "server._proto") or m.startswith("server._proto.") for m in server)
    heavy = ("numpy", "onnxruntime", "usearch", "tokenizers", "torch", "training", "prometheus_client")
    assert not [m for m in modules if m.split(".")[0] in heavy]
