"""How Sift opens every ONNX model: explicit thread settings, the sequential executor, no spinning.

Separate from onnx.py, which adds metrics and the batcher, so that the MLServer peer runtime
(benchmarks/peer/runtime.py) can open its sessions the same way without registering Sift's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

# No usage telemetry from a serving process (it also tries to write a device id under $HOME, which a
# container with a read-only root filesystem refuses).
ort.disable_telemetry_events()


@dataclass(frozen=True, slots=True)
class ThreadSettings:
    intra_op: int = 1
    """Threads one model call may use. Small models answer fastest on one thread; see config.py."""
    inter_op: int = 1
    """Threads for running independent graph branches; 1 with the sequential executor."""


def session_options(threads: ThreadSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.intra_op
    options.inter_op_num_threads = threads.inter_op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the cores other requests need; with 1 intra-op thread it never applies.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: str, threads: ThreadSettings) -> ort.InferenceSession:
    return ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
