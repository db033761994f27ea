"""The teacher as ONNX matches the PyTorch teacher, and the quantisation gate falls back when it must."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.onnx_teacher import METHODS, export_sentence_encoder, quantize_with_gate, sensitive_nodes
from training.teachers import SentenceTeacher, minilm_dir
from training.transformer_student import encode_texts, load_tokenizer

QUERIES = [
    "red running shoes",
    "wireless noise cancelling headphones",
    "organic green tea 100 bags",
    "usb c charger 65w",
    "stainless steel water bottle",
    "kids winter jacket size 8",
]


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "minilm.onnx"
    export_sentence_encoder(minilm_dir(), path)
    return path


def _embed(path: Path) -> np.ndarray:
    ids, mask = encode_texts(load_tokenizer(minilm_dir()), QUERIES)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


def test_exported_teacher_matches_pytorch(teacher_onnx: Path) -> None:
    want = SentenceTeacher(minilm_dir()).encode(QUERIES)
    got = _embed(teacher_onnx)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _min_cosine_to(reference: np.ndarray):
    def check(candidate: Path) -> float:
        return float((_embed(candidate) * reference).sum(axis=1).min())

    return check


def test_gate_keeps_plain_int8_when_it_passes(teacher_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "gated.onnx"
    result = quantize_with_gate(teacher_onnx, out, _min_cosine_to(_embed(teacher_onnx)), threshold=0.5)
    assert result["method"] == "int8"
    assert list(result["tried"]) == ["int8"]
    assert 0.5 <= result["score"] < 1.0
    assert out.stat().st_size < teacher_onnx.stat().st_size / 3
    assert list(tmp_path.iterdir()) == [out]  # the candidates' scratch folder is gone


def test_gate_falls_back_to_fp32_when_int8_cannot_reach(teacher_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "gated.onnx"
    result = quantize_with_gate(teacher_onnx, out, _min_cosine_to(_embed(teacher_onnx)), threshold=1.0)
    assert result["method"] == "fp32"
    assert list(result["tried"]) == list(METHODS)
    assert all(score < 1.0 for method, score in result["tried"].items() if method != "fp32")
    # The more careful schemes are no worse than per-tensor int8 on this teacher.
    assert result["tried"]["int8_mixed"] >= result["tried"]["int8"]
    assert out.read_bytes() == teacher_onnx.read_bytes()


def test_gate_stops_at_the_first_method_that_passes(teacher_onnx: Path, tmp_path: Path) -> None:
    scores = {"int8": 0.2, "int8_per_channel": 0.6, "int8_mixed": 0.9, "fp32": 1.0}
    seen: list[str] = []

    def check(candidate: Path) -> float:
        seen.append(candidate.stem)
        return scores[candidate.stem]

    result = quantize_with_gate(teacher_onnx, tmp_path / "gated.onnx", check, threshold=0.5)
    assert result == {
        "method": "int8_per_channel",
        "score": 0.6,
        "tried": {"int8": 0.2, "int8_per_channel": 0.6},
    }
    assert seen == ["int8", "int8_per_channel"]


def test_sensitive_nodes_are_the_embedding_gather_and_the_last_matmuls(teacher_onnx: Path) -> None:
    graph = onnx.load(str(teacher_onnx)).graph
    names = sensitive_nodes(teacher_onnx)
    by_name = {n.name: n for n in graph.node}
    gathers = [n for n in names if by_name[n].op_type == "Gather"]
    tables = {by_name[n].input[0] for n in gathers}
    assert "word_embeddings.weight" in tables
    assert tables <= {"word_embeddings.weight", "position_embeddings.weight"}
    matmuls = [n for n in names if by_name[n].op_type in ("MatMul", "Attention")]
    # 6 layers x 4 weighted nodes (the fused attention with Q, K and V, then 3 MatMuls); the last third are
    # the top two layers'.
    assert len(matmuls) == 8
    assert all("layers.4" in n or "layers.5" in n for n in matmuls)
