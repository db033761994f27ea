"""Activation smoothing (training/smooth_quant.py): the smoothed fp32 graph computes what the original does,
and once quantized it keeps an outlier channel from crushing the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from training.export import QUANT_OPS
from training.smooth_quant import smooth_activations


def _graph(path: Path, weight: np.ndarray) -> None:
    """x [batch, tokens, 16] -> x @ W [batch, tokens, 32]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", 32])
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="product")
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 8, 16)).astype(np.float32)
    x[..., 3] *= 40.0  # one outlier channel, as a BERT's hidden states have
    return x


def test_smoothing_keeps_the_product_and_helps_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 32)).astype(np.float32)
    _graph(tmp_path / "plain.onnx", weight)
    record = smooth_activations(
        tmp_path / "plain.onnx", tmp_path / "smoothed.onnx", [{"x": _inputs(rng, 16)}]
    )
    assert record["products"] == 1 and record["largest_channel_ratio"] > 10

    x = _inputs(rng, 32)
    exact = _run(tmp_path / "plain.onnx", x)
    np.testing.assert_allclose(_run(tmp_path / "smoothed.onnx", x), exact, rtol=1e-4, atol=1e-3)

    errors = {}
    for name in ("plain", "smoothed"):
        quantized = tmp_path / f"{name}.int8.onnx"
        quantize_dynamic(
            str(tmp_path / f"{name}.onnx"),
            str(quantized),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANT_OPS,
            per_channel=True,
        )
        errors[name] = float(np.abs(_run(quantized, x) - exact).mean())
    assert errors["smoothed"] < 0.5 * errors["plain"]


def test_padding_positions_do_not_set_the_scale(tmp_path: Path) -> None:
    """Calibration reads the first input as ids: positions with id 0 are padding and left out."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", 2])
    table = np.array([[100.0, 100.0], [1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["h"], name="lookup"),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="product"),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.eye(2, dtype=np.float32), "w"),
    ]
    graph = helper.make_graph(nodes, "g", [ids], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    smooth_activations(tmp_path / "g.onnx", tmp_path / "s.onnx", [{"ids": np.array([[1, 2, 0]])}], alpha=1.0)
    smoothed = onnx.load(str(tmp_path / "s.onnx"))
    inverse = next(i for i in smoothed.graph.initializer if i.name.endswith("smooth_inverse"))
    # alpha 1: the scale is the channel maximum over rows 1 and 2 (2, 2), not row 0's 100.
    np.testing.assert_allclose(numpy_helper.to_array(inverse), [0.5, 0.5])
