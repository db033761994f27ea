"""An onnxruntime session with explicit thread settings, optionally behind a micro-batcher.
Knows nothing of requests."""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server import metrics, timing, tracing
from server.manifest import TensorSpec
from server.runtime.batcher import Batcher, BatchPolicy
from server.runtime.session import ThreadSettings, open_session

__all__ = ["OnnxModel", "TensorSpec", "ThreadSettings"]

# Model runs of heavy calls go here, beside the event loop (onnxruntime releases the GIL while it runs): one
# thread per serving process, so a process uses at most its event loop's core and this thread's.
_OFFLOAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-model")

SAMPLE_ROWS = 16
"""Runs of at least this many rows update a model's expected time per row (`row_seconds`); smaller runs are
mostly the run's fixed cost."""
ROW_SECONDS_WEIGHT = 0.1
"""Weight of the newest sampled run in `row_seconds`' moving average."""

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OnnxModel:
    def __init__(
        self, path: Path, name: str, threads: ThreadSettings, batching: BatchPolicy | None = None
    ) -> None:
        self.name = name
        self.session = open_session(str(path), threads)
        self._output = self.session.get_outputs()[0].name
        self._input = self.session.get_inputs()[0].name
        self._latency = metrics.INFERENCE_DURATION.labels(model=name)
        self._batch = metrics.INFERENCE_BATCH_SIZE.labels(model=name)
        self._queue = metrics.QUEUE_DURATION.labels(model=name)
        # max_batch 1 means no batcher at all: each call runs inline, with no queue to pay for.
        self._policy = batching if batching and batching.max_batch > 1 else None
        self._batcher: Batcher | None = None
        self.row_seconds: float | None = None
        """Moving average of seconds per row over this model's runs of at least SAMPLE_ROWS rows (None
        before the first): what a run of many rows is expected to take (server/service/heavy.py)."""

    def expected_seconds(self, rows: int) -> float | None:
        return None if self.row_seconds is None else rows * self.row_seconds

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(arg: ort.NodeArg) -> TensorSpec:
            shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
            return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)

        return [spec(a) for a in self.session.get_inputs()], [spec(a) for a in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Runs the model and returns its first output."""
        start = time.perf_counter()
        out = self.session.run([self._output], inputs)[0]
        took = time.perf_counter() - start
        self._latency.observe(took)
        timing.add("inference", took)
        n = len(inputs.get("features", next(iter(inputs.values()))))
        self._batch.observe(n)
        if n >= SAMPLE_ROWS:
            per_row, last = took / n, self.row_seconds
            self.row_seconds = per_row if last is None else last + ROW_SECONDS_WEIGHT * (per_row - last)
        return out

    async def infer(
        self, rows: np.ndarray | dict[str, np.ndarray], deadline: float | None = None, offload: bool = False
    ) -> np.ndarray:
        """The model's output for `rows` (its single input), through the micro-batcher when there is one;
        or for named inputs (a model of several, such as a text_bags relevance model that reads one query
        beside its candidates' rows), run as they are. `deadline` is a time.monotonic() instant; the
        batcher drops or sheds calls that cannot meet it. `offload` runs it on the model thread instead of
        the event loop (for large runs; a small one costs more to hand over than to run)."""
        inputs = rows if isinstance(rows, dict) else {self._input: rows}
        n = len(inputs.get("features", next(iter(inputs.values()))))
        with tracing.step("model", model=self.name, rows=n, offload=offload):
            return await self._infer(inputs, deadline, offload)

    async def _infer(
        self, inputs: dict[str, np.ndarray], deadline: float | None, offload: bool
    ) -> np.ndarray:
        if self._policy is None or len(inputs) > 1:
            if offload:  # the call's context goes along, so its time breakdown still counts the run
                run = contextvars.copy_context().run
                return await asyncio.get_running_loop().run_in_executor(_OFFLOAD, run, self.run, inputs)
            return self.run(inputs)
        rows = inputs[self._input]
        if self._batcher is None:  # made on first use, inside the serving event loop
            self._batcher = Batcher(
                lambda x: self.run({self._input: x}), self._policy, _combiner(rows.dtype), self._observe
            )
        start = time.perf_counter()
        out, ran = await self._batcher.run_timed(rows, deadline)
        timing.add("inference", ran)
        timing.add("queue", time.perf_counter() - start - ran)
        return out

    def _observe(self, rows: int, queued: float, took: float) -> None:
        self._queue.observe(queued)


def _combiner(dtype: np.dtype):
    """Hashed id rows differ in width: pad with 0 (the padding id) to the widest. Features just stack."""
    if np.issubdtype(dtype, np.integer):

        def pad(parts: list[np.ndarray]) -> np.ndarray:
            width = max(p.shape[1] for p in parts)
            return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])

        return pad
    return np.concatenate
