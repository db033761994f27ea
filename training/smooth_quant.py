"""Activation smoothing before int8 dynamic quantization (SmoothQuant, Xiao et al. 2023) of an fp32 ONNX
graph.

Dynamic quantization gives each activation matrix one int8 scale, set by its largest value. A BERT's
hidden states carry a few outlier channels, an order of magnitude above the median channel at the input of
its feed-forward products (the bundle's manifest records the largest ratio), so the scale that fits the
outlier leaves every other channel a handful of levels. Smoothing divides each input channel j of a
matrix product by s_j and multiplies row j of its weight by s_j, so the product is unchanged in exact
arithmetic, with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha): part of the activation's range moves into the
weight, which is quantized per output channel and has room for it.

A BERT is post-LayerNorm, and each LayerNorm's output also feeds the residual stream, so the division
cannot be folded into the LayerNorm: it is a Mul node on the edge into the matrix product alone (a few
thousand multiplications per query, next to the products' millions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ALPHA = 0.7
"""How much of the activations' range moves into the weights: chosen by a sweep from 0.5 to 1 on the default
bundle's query student, for the mean cosine of its int8 graph to its teacher on real queries (0.5, the
paper's default, did worse than no smoothing there; a one-off sweep outside the repository)."""
SMOOTHED_OPS = ("MatMul", "Attention")
"""Matrix products with a constant weight in input 1: onnxruntime's fused Attention takes [hidden, 3 x hidden]
there, so its query, key and value projections share one smoothing."""


def smooth_activations(
    src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]], alpha: float = ALPHA
) -> dict[str, float]:
    """Writes to `dst` the graph `src` with every matrix product of SMOOTHED_OPS smoothed, its activations'
    channel maxima measured over `feeds` (inputs of the graph; when the first input is token ids, padding,
    id 0, is left out). Returns the record for the training report: how many products, alpha, and the
    largest ratio of a product's largest input channel maximum to its median one."""
    model = onnx.load(str(src))
    weights = {init.name: init for init in model.graph.initializer}
    targets = [n for n in model.graph.node if n.op_type in SMOOTHED_OPS and n.input[1] in weights]
    maxima = _channel_maxima(model, [n.input[0] for n in targets], feeds)
    worst = 0.0
    for node in targets:
        amax = np.maximum(maxima[node.input[0]], 1e-5)
        weight = numpy_helper.to_array(weights[node.input[1]])
        wmax = np.maximum(np.abs(weight).max(axis=1), 1e-5)
        scale = (amax**alpha / wmax ** (1 - alpha)).astype(np.float32)
        worst = max(worst, float(amax.max() / np.median(amax)))
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        inverse = numpy_helper.from_array((1 / scale).astype(np.float32), f"{node.name}/smooth_inverse")
        model.graph.initializer.append(inverse)
        smoothed = f"{node.name}/smoothed_input"
        mul = helper.make_node("Mul", [node.input[0], inverse.name], [smoothed], name=f"{node.name}/smooth")
        node.input[0] = smoothed
        nodes = list(model.graph.node)
        model.graph.node.insert(nodes.index(node), mul)
    onnx.save(model, str(dst))
    return {"alpha": alpha, "products": len(targets), "largest_channel_ratio": round(worst, 1)}


def _channel_maxima(
    model: onnx.ModelProto, names: list[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each named tensor over the non-padding positions of `feeds`."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    unique = list(dict.fromkeys(names))
    outputs = {o.name for o in probe.graph.output}
    for name in unique:
        if name not in outputs:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        first = next(iter(feed.values()))
        # Token ids [batch, tokens] in the first input: positions with id 0 are padding and left out.
        tokens = first != 0 if first.ndim == 2 and np.issubdtype(first.dtype, np.integer) else None
        for name, value in zip(unique, session.run(unique, feed), strict=True):
            if tokens is not None and value.shape[:2] == tokens.shape:
                rows = value[tokens]
            else:
                rows = value.reshape(-1, value.shape[-1])
            current = np.abs(rows).max(axis=0)
            maxima[name] = np.maximum(maxima[name], current) if name in maxima else current
    return maxima
