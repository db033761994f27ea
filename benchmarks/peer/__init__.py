"""MLServer as a peer for `sift-bench peer`: Sift's ClassifyIntent work served by Seldon MLServer 1.7.1.

MLServer 1.7.1 requires protobuf<7 and Sift protobuf>=7.35, so MLServer runs from its own virtual
environment (`ensure_venv`, default .venv-mlserver) with this checkout on PYTHONPATH: its runtime
(runtime.py) imports Sift's featurizer from here. Code that needs MLServer's classes runs with that venv's
python (encode.py); this module imports only the standard library at load time, so it works in both venvs.
The load generator sends complete serialized ModelInferRequests with `channel.unary_unary(MODEL_INFER_PATH)`
and no serializers, which is why `infer_payloads` returns bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.ports import free_port  # standard library only, as this module must be

PEER_DIR = Path(__file__).resolve().parent
ROOT = PEER_DIR.parent.parent
REQUIREMENTS = PEER_DIR / "requirements.txt"
ENCODE_SCRIPT = PEER_DIR / "encode.py"
DEFAULT_VENV = ROOT / ".venv-mlserver"
# The pinned version, as benchmark outputs record it.
MLSERVER_VERSION = next(
    line.split("==")[1].strip()
    for line in REQUIREMENTS.read_text().splitlines()
    if line.startswith("mlserver==")
)
MODEL_NAME = "sift-intent"
RUNTIME = "benchmarks.peer.runtime.SiftIntentRuntime"
TOP_K = 5
# Full gRPC method names from MLServer 1.7.1's dataplane.proto (package inference).
MODEL_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
MODEL_READY_PATH = "/inference.GRPCInferenceService/ModelReady"
# Written into the venv after a successful install: a changed requirements.txt reinstalls.
_STAMP = "sift-peer-requirements.sha256"
_FRAME = struct.Struct(">I")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(path: Path) -> Path:
    """Creates (or updates) the MLServer venv at `path` from requirements.txt; returns `path`.

    Idempotent: an install whose requirements have not changed since is reused without running pip.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = path / _STAMP
    if venv_python(path).exists() and stamp.is_file() and stamp.read_text().strip() == digest:
        return path
    if not venv_python(path).exists():
        # MLServer 1.7.1 supports Python 3.9-3.12; Sift's own interpreter is one of those.
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(venv_python(path)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest + "\n")
    return path


def write_model_repository(
    bundle: Path, directory: Path, grpc_port: int, http_port: int, metrics_port: int
) -> Path:
    """Writes MLServer's settings.json and the intent model's model-settings.json under `directory`.

    Returns `directory`, the path to give `mlserver start`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        # Sift serves from one process on its event loop; parallel_workers=0 does the same in MLServer
        # (inference in the server process) instead of forwarding each request to a worker process.
        "parallel_workers": 0,
        # debug=True turns on per-request access logs on both gRPC and REST.
        "debug": False,
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "load_models_at_startup": True,
        "model_repository_root": str(directory),
    }
    (directory / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_dir = directory / MODEL_NAME
    model_dir.mkdir(exist_ok=True)
    model_settings = {
        "name": MODEL_NAME,
        "implementation": RUNTIME,
        "parameters": {"uri": str(bundle.resolve())},
        # No adaptive batching: Sift answers each request on its own.
        "max_batch_size": 0,
        "inputs": [{"name": "query", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "label_ids", "datatype": "BYTES", "shape": [1, -1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [1, -1]},
        ],
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return directory


def mlserver_env() -> dict[str, str]:
    """Environment for processes of the MLServer venv: the checkout importable, nothing of Sift's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_mlserver(
    venv: Path, bundle: Path, workdir: Path, grpc_port: int, timeout: float = 120.0
) -> subprocess.Popen[bytes]:
    """Starts `mlserver start` on the bundle's intent model and returns once the model is ready on gRPC.

    The server's output goes to workdir/mlserver.log (a file, so a long benchmark cannot fill a pipe and
    stall it). Raises RuntimeError quoting the log if MLServer exits or is not ready within `timeout`.
    """
    mlserver = venv / "bin" / "mlserver"
    if not mlserver.exists():
        raise FileNotFoundError(f"{mlserver} missing: create the venv with ensure_venv({venv})")
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(f"{bundle}: not a Sift bundle (no manifest.json)")
    repository = write_model_repository(bundle, workdir / "models", grpc_port, free_port(), free_port())
    log_path = workdir / "mlserver.log"
    with log_path.open("wb") as log:
        # cwd=workdir: MLServer keeps its .envs and .metrics directories relative to it.
        process = subprocess.Popen(
            [str(mlserver), "start", str(repository)],
            cwd=workdir,
            env=mlserver_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_model_ready(process, f"127.0.0.1:{grpc_port}", log_path, timeout)
    except BaseException:
        stop_mlserver(process)
        raise
    return process


def stop_mlserver(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_excerpt(path: Path, lines: int = 40) -> str:
    """From the first error on (MLServer logs a failed load, then many lines of shutdown), else the tail."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = (i for i, line in enumerate(text) if " ERROR " in line or line.startswith("Traceback"))
    first = next(errors, None)
    return "\n".join(text[-lines:] if first is None else text[first : first + lines])


def _model_ready_request(name: str) -> bytes:
    # ModelReadyRequest{name = 1}: encoded by hand because Sift's venv has no MLServer protos.
    data = name.encode()
    if len(data) > 127:
        raise ValueError("model name too long for a one-byte length")
    return b"\x0a" + bytes([len(data)]) + data


def _wait_model_ready(process: subprocess.Popen[bytes], target: str, log_path: Path, timeout: float) -> None:
    import grpc  # in both venvs; imported here so this module loads with the standard library alone

    request = _model_ready_request(MODEL_NAME)
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        ready = channel.unary_unary(MODEL_READY_PATH)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlserver exited with code {process.returncode} before {MODEL_NAME} was ready; "
                    f"log ({log_path}):\n{_log_excerpt(log_path)}"
                )
            try:
                # ModelReadyResponse{ready = 1}: true is the bytes 08 01; false is the empty message.
                if ready(request, timeout=1.0) == b"\x08\x01":
                    return
            except grpc.RpcError:
                pass  # not listening yet, or the model is still loading
            time.sleep(0.2)
    raise RuntimeError(
        f"mlserver: {MODEL_NAME} not ready on {target} after {timeout:.0f} s; "
        f"log ({log_path}):\n{_log_excerpt(log_path)}"
    )


def write_frames(path: Path, items: list[bytes]) -> None:
    """Length-prefixed (4-byte big-endian) messages: how encode.py and this module exchange protobufs."""
    with path.open("wb") as f:
        for item in items:
            f.write(_FRAME.pack(len(item)))
            f.write(item)


def read_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        out.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise ValueError(f"{path}: truncated frame")
    return out


def _run_encode(venv: Path, *args: str) -> None:
    result = subprocess.run(
        [str(venv_python(venv)), str(ENCODE_SCRIPT), *args],
        env=mlserver_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{ENCODE_SCRIPT.name} {args[0]} failed ({result.returncode}):\n{result.stderr}")


def infer_payloads(venv: Path, queries: list[str], model_name: str = MODEL_NAME) -> list[bytes]:
    """One serialized ModelInferRequest per query (input "query", BYTES, shape [1]), built by MLServer's
    own protobuf classes in `venv`; send each with `channel.unary_unary(MODEL_INFER_PATH)`."""
    with tempfile.TemporaryDirectory(prefix="sift-peer-") as tmp:
        queries_path, out = Path(tmp) / "queries.json", Path(tmp) / "requests.bin"
        queries_path.write_text(json.dumps(queries))
        _run_encode(
            venv, "encode", "--model", model_name, "--queries", str(queries_path), "--output", str(out)
        )
        payloads = read_frames(out)
    if len(payloads) != len(queries):
        raise RuntimeError(f"encode.py wrote {len(payloads)} requests for {len(queries)} queries")
    return payloads


def decode_responses(venv: Path, responses: list[bytes]) -> list[dict[str, list[str] | list[float]]]:
    """Serialized ModelInferResponses -> {output name: values} (label ids as str), decoded in `venv`."""
    with tempfile.TemporaryDirectory(prefix="sift-peer-") as tmp:
        frames, out = Path(tmp) / "responses.bin", Path(tmp) / "decoded.json"
        write_frames(frames, responses)
        _run_encode(venv, "decode", "--responses", str(frames), "--output", str(out))
        return json.loads(out.read_text())
