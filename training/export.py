"""Export to ONNX, int8 dynamic quantization, and the int8-vs-fp32 parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from server.runtime.onnx import OnnxModel, ThreadSettings


def export_onnx(
    model: nn.Module, example: torch.Tensor, input_name: str, output_name: str, path: Path
) -> None:
    """fp32 ONNX with dynamic batch (and, for id inputs, dynamic width)."""
    axes = {0: "batch", 1: "features"} if example.dtype == torch.int64 else {0: "batch"}
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


QUANT_OPS = ["MatMul", "Gemm", "Gather", "Attention"]
"""Weights quantized to int8: matrix products, embedding tables, and a transformer's fused attention
(training/transformer_student.py exports it as onnxruntime's Attention, which becomes QAttention)."""


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8: weights (embedding tables included, via Gather) stored as int8, activations quantized
    on the fly. The embedding table dominates a hashed n-gram student, so this cuts the file ~4x."""
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANT_OPS,
    )


def run_onnx(path: Path, name: str, input_name: str, inputs: np.ndarray, batch: int = 1024) -> np.ndarray:
    model = OnnxModel(path, name, ThreadSettings(intra_op=2))
    outs = [model.run({input_name: inputs[i : i + batch]}) for i in range(0, len(inputs), batch)]
    return np.concatenate(outs)
