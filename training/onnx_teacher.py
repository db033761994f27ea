"""The teacher itself as ONNX (to time it against PyTorch), and an int8 quantisation gate that falls back.

Dynamic int8 is not safe on every transformer: measured here it keeps all-MiniLM-L6-v2's query embeddings at
a minimum cosine of 0.96 to fp32 but drops all-mpnet-base-v2's to 0.72. So a candidate is only kept if a
caller-supplied parity check passes, trying progressively more conservative schemes and ending in fp32.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from training.export import QUANT_OPS, quantize_int8
from training.finetune import load_encoder, mean_pool
from training.transformer_student import encode_texts, export_transformer_onnx, full_encoder, load_tokenizer

EXCLUDED_TAIL = 1 / 3
"""The mixed candidate keeps this fraction of the weight MatMuls/Gemms, the last in graph order (the top
layers and the head, where quantisation error has had the most chance to build up), in fp32."""
METHODS = ("int8", "int8_per_channel", "int8_embeddings", "int8_mixed", "fp32")
"""int8_embeddings quantizes only the embedding tables (Gather): the bulk of a hashed n-gram student's
weights, while its small dense layers, whose activations dynamic quantization would round, stay fp32."""


def export_sentence_encoder(model_dir: Path, path: Path, max_length: int = 32) -> None:
    """The whole teacher (all layers, full vocabulary) with mean pooling and L2 normalisation as one graph:
    int64 `input_ids`, `attention_mask` -> `embedding`. Callers tokenise with truncation to `max_length`
    (training.transformer_student.load_tokenizer); the graph itself accepts any length up to 512."""
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") == "bert":
        export_transformer_onnx(full_encoder(model_dir), load_tokenizer(model_dir, max_length), path)
        return
    # Other architectures (mpnet): the transformers model itself, wrapped with pooling.
    _, model = load_encoder(model_dir)
    ids, mask = encode_texts(load_tokenizer(model_dir, max_length), ["warm up query", "a"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Pooled(model.eval()),
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )


class _Pooled(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def sensitive_nodes(model_path: Path, tail_fraction: float = EXCLUDED_TAIL) -> list[str]:
    """Names of the nodes the mixed candidate leaves in fp32: every Gather from a float table (the word and
    position embeddings; an int64 id remap is not touched by the quantiser anyway) and the last
    `tail_fraction` of the MatMul/Gemm nodes that have a weight initializer."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    floats = {
        init.name
        for init in graph.initializer
        if numpy_helper.to_array(init).dtype.kind == "f" and len(init.dims) >= 2
    }
    gathers = [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in floats]
    weighted = [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm", "Attention") and any(i in floats for i in n.input)
    ]
    tail = math.ceil(len(weighted) * tail_fraction)
    return gathers + (weighted[len(weighted) - tail :] if tail else [])


def _candidate(method: str, fp32_path: Path, out: Path) -> None:
    if method == "int8":
        quantize_int8(fp32_path, out)
    elif method == "int8_per_channel":
        quantize_dynamic(
            str(fp32_path),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANT_OPS,
            per_channel=True,
        )
    elif method == "int8_embeddings":
        quantize_dynamic(
            str(fp32_path), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"]
        )
    elif method == "int8_mixed":
        quantize_dynamic(
            str(fp32_path),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANT_OPS,
            per_channel=True,
            nodes_to_exclude=sensitive_nodes(fp32_path),
        )
    elif method == "fp32":
        shutil.copyfile(fp32_path, out)
    else:
        raise ValueError(f"unknown method {method!r}")


def quantize_with_gate(
    fp32_path: Path, out_path: Path, check: Callable[[Path], float], threshold: float
) -> dict:
    """Writes to `out_path` the first of METHODS whose `check(candidate)` score (higher is better, e.g. the
    minimum cosine to fp32 embeddings or top-1 agreement) reaches `threshold`; fp32 is kept regardless if
    nothing else passes. Returns {"method", "score", "tried": {method: score}} for the training report."""
    tried: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gate-", dir=out_path.parent) as tmp:
        for method in METHODS:
            candidate = Path(tmp) / f"{method}.onnx"
            _candidate(method, fp32_path, candidate)
            score = float(check(candidate))
            tried[method] = score
            if score >= threshold or method == METHODS[-1]:
                shutil.move(str(candidate), out_path)
                return {"method": method, "score": score, "tried": tried}
    raise AssertionError("unreachable: the last method is always kept")
