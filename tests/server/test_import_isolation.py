"""The server's layering: the server is runtime only (never torch, training or benchmarks), no import runs
upward, and the manifest module stays light enough for training and the MLServer peer to read bundles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "server"

# From the bottom up; a module may import its own layer and the ones below it, never one above.
LAYERS = (
    (
        "server._proto",
        "server.errors",
        "server.manifest",
        "server.manifest_parts",
        "server.logs",
        "server.timing",
        "server.metrics",
        "server.ports",
        "server.tracing",
    ),
    (
        "server.config",
        "server.api_keys",
        "server.featurize",
        "server.query_tokens",
        "server.rules",
        "server.relevance_cascade",
    ),
    ("server.runtime", "server.catalogue"),
    ("server.bundle", "server.admission"),
    ("server.service",),
    ("server.transport",),
    ("server.app", "server.__main__", "server.workers", "server.healthcheck", "server.heavy_worker"),
)
HEAVY = ("onnxruntime", "usearch", "grpc", "tokenizers", "torch", "transformers", "prometheus_client")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import | ast.ImportFrom)]


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.module == "server":  # `from server import metrics`
        return [f"server.{alias.name}" for alias in node.names]
    return [node.module or ""]


def _layer(module: str) -> int:
    if module == "server":  # the package's own __init__, which imports nothing
        return 0
    for rank, layer in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer):
            return rank
    raise AssertionError(f"{module}: not in any layer of {__name__}.LAYERS; add it where it belongs")


SOURCES = sorted(p for p in SERVER.rglob("*.py") if "_proto" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SERVER)))
def test_no_import_runs_upward(path: Path) -> None:
    module = _module_name(path)
    rank = _layer(module)
    for node in _imports(path):
        for name in _imported(node):
            top = name.split(".")[0]
            assert top not in ("training", "benchmarks", "tests"), f"{module} imports {name}"
            if top != "server":
                continue
            assert _layer(name) <= rank, f"{module} imports {name}, a layer above it"
            if module.startswith("server.transport"):
                assert not name.startswith(("server.runtime", "server.bundle")), (
                    f"{module} imports {name}: the transport sees the service layer only"
                )
            if isinstance(node, ast.ImportFrom) and name != module:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{module} imports private names {private} from {name}"


def _loaded_after(imports: str) -> list[str]:
    code = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_server_never_imports_torch_or_training() -> None:
    loaded = _loaded_after("import server.__main__, server.app, server.bundle")
    bad = [m for m in loaded if m.split(".")[0] in ("torch", "training", "transformers", "benchmarks")]
    assert not bad


def test_manifest_and_errors_import_nothing_heavy() -> None:
    loaded = _loaded_after("import server.manifest, server.errors")
    assert not [m for m in loaded if m.split(".")[0] in (*HEAVY, "numpy")]
    assert not [
        m
        for m in loaded
        if m.startswith("server.") and m not in ("server.manifest", "server.manifest_parts", "server.errors")
    ]


def test_runtime_never_loads_service_or_transport() -> None:
    loaded = _loaded_after(
        "import onnxruntime, server.runtime.onnx, server.runtime.index, server.runtime.batcher"
    )
    assert not [m for m in loaded if m.startswith(("server.service", "server.transport", "server.bundle"))]


def test_what_the_mlserver_peer_imports_registers_no_metrics() -> None:
    """benchmarks/peer/runtime.py runs inside MLServer, whose Prometheus registry must not get Sift's."""
    loaded = _loaded_after(
        "import onnxruntime, server.manifest, server.runtime.session, server.service.validation, server.rules"
    )
    assert not [m for m in loaded if m.split(".")[0] in ("prometheus_client", "grpc", "usearch")]
    assert "server.metrics" not in loaded
