"""The hashed n-gram students (training/students.py): padding counts for nothing, in PyTorch and in the
exported int8 graph the server runs, although the bag sums without a mask; and the training loop's
learning-rate schedule."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.export import export_onnx, quantize_int8
from training.students import HashedBag, QueryEncoderStudent, fit, warmup_decay


def test_the_bag_is_the_mean_over_the_ids_that_are_not_padding() -> None:
    torch.manual_seed(0)
    bag = HashedBag(64, 8)
    ids = torch.tensor([[5, 9, 9, 0, 0], [3, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    table = bag.embedding.weight.detach()
    expected = torch.stack([table[row[row > 0]].sum(0) / max(int((row > 0).sum()), 1) for row in ids])
    assert torch.allclose(bag(ids), expected, atol=1e-7)
    assert not bag(ids)[2].any()  # no ids at all: the zero vector, not NaN


def test_training_leaves_the_padding_row_zero() -> None:
    torch.manual_seed(0)
    bag = HashedBag(64, 8)
    optimizer = torch.optim.SparseAdam(bag.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        bag(torch.tensor([[1, 2, 0], [4, 0, 0]])).pow(2).sum().backward()
        optimizer.step()
    assert not bag.embedding.weight[0].any()
    assert bag.embedding.weight[1].abs().sum() > 0


def test_the_int8_graph_ignores_padding(tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = QueryEncoderStudent(256, 16, 32)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, torch.tensor([[1, 2, 3]]), "ids", "vector", fp32)
    quantize_int8(fp32, int8)
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])

    def run(ids: list[list[int]]) -> np.ndarray:
        return session.run(None, {"ids": np.array(ids, dtype=np.int64)})[0]

    # The same texts padded to different widths give the same vectors, to the bit.
    assert np.array_equal(run([[7, 11, 200]]), run([[7, 11, 200, 0, 0, 0, 0]])[:1])
    assert np.array_equal(run([[7, 0, 0], [7, 11, 200]])[0], run([[7]])[0])


def test_warmup_decay_rises_to_the_peak_then_falls_towards_zero() -> None:
    steps, warmup = 100, 0.1
    factors = [warmup_decay(s, steps, warmup) for s in range(steps)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == factors[10] == max(factors) == 1.0
    assert all(a < b for a, b in itertools.pairwise(factors[:10]))
    assert all(a > b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] == pytest.approx(1 / 90)


@pytest.mark.parametrize(("warmup", "moved"), [(None, 8.0), (0.25, 5.0)])
def test_fit_steps_by_the_schedule(warmup: float | None, moved: float) -> None:
    # A constant gradient makes each Adam step exactly the learning rate, so the weight moves by the rate
    # times the sum of the schedule's factors: 8 steps of 1, or 0.5, 1, 1, 5/6 ... 1/6 (sum 5).
    model = nn.Linear(1, 1, bias=False)
    start = float(model.weight.detach())
    fit(model, 64, lambda idx: model.weight.sum(), 1, 8, 0.01, 0, "test", warmup=warmup)
    assert start - float(model.weight) == pytest.approx(moved * 0.01, rel=1e-3)
