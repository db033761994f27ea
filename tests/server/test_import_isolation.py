"""The server is runtime only: importing it must never pull in torch or the training package."""

import subprocess
import sys


def test_server_never_imports_torch_or_training() -> None:
    code = (
        "import sys, server.__main__, server.app, server.bundle;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'transformers'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
