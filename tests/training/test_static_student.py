"""The static word-piece query model: rows of MiniLM's own embeddings of each piece, tuned so that means of
them land on the teacher's vectors, exported as the graph the server runs on its tokenizer's ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from server.query_tokens import QueryTokenizer
from training.query_student import query_tokenizer
from training.static_student import (
    StaticStudent,
    distil_static_student,
    export_static_student,
    piece_table,
)
from training.teachers import minilm_dir
from training.transformer_student import full_encoder, load_tokenizer


def _random_student(dim: int = 16, seed: int = 0) -> StaticStudent:
    vocabulary = load_tokenizer(minilm_dir()).get_vocab_size()
    return StaticStudent(torch.randn(vocabulary, dim, generator=torch.Generator().manual_seed(seed)))


def test_each_row_is_minilms_embedding_of_its_piece_alone() -> None:
    tokenizer = load_tokenizer(minilm_dir())
    pieces = [tokenizer.token_to_id(w) for w in ("oak", "table", "##s")]
    table = piece_table(minilm_dir(), pieces=pieces)
    encoder = full_encoder(minilm_dir()).eval()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    with torch.inference_mode():
        alone = encoder(torch.tensor([[cls, pieces[1], sep]]), torch.ones((1, 3), dtype=torch.int64))[0]
    assert table.shape == (3, 384)
    assert table[1] == pytest.approx(alone.numpy(), abs=1e-5)
    assert float(table[0] @ table[2]) < 0.99  # different pieces, different rows


def test_distillation_puts_texts_where_the_teacher_puts_them() -> None:
    texts = ["oak dining table", "blue area rug", "kids bunk bed", "brass floor lamp"]
    targets = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)))
    student = _random_student()
    tokenizer = load_tokenizer(minilm_dir())
    ids = torch.from_numpy(query_tokenizer().ids(texts))
    with torch.no_grad():
        before = (student(ids) * targets).sum(1)
    history = distil_static_student(
        student, tokenizer, texts, targets.numpy(), epochs=150, seed=0, learning_rate=0.05
    )
    with torch.no_grad():
        after = (student(ids) * targets).sum(1)
    assert before.max() < 0.8
    assert after.min() > 0.95
    assert history[-1] < history[0]


def test_a_wider_teacher_space_is_reached_through_a_projection() -> None:
    """A product teacher of another width (mpnet: 768) gets a projection after the mean, learnt with it."""
    texts = ["oak dining table", "blue area rug"]
    targets = torch.nn.functional.normalize(torch.randn(2, 24, generator=torch.Generator().manual_seed(2)))
    vocabulary = load_tokenizer(minilm_dir()).get_vocab_size()
    student = StaticStudent(torch.randn(vocabulary, 16, generator=torch.Generator().manual_seed(0)), 24)
    distil_static_student(
        student, load_tokenizer(minilm_dir()), texts, targets.numpy(), epochs=150, seed=0, learning_rate=0.05
    )
    ids = torch.from_numpy(query_tokenizer().ids(texts))
    with torch.no_grad():
        assert (student(ids) * targets).sum(1).min() > 0.95


def test_export_serves_the_tuned_rows_on_the_servers_ids(tmp_path: Path) -> None:
    """The int8 export through the server's own tokenizer gives the torch model's vectors; a text padded in
    a batch with a longer one gets its vector alone (padding is masked out of the mean)."""
    student = _random_student(dim=32)
    texts = ["oak dining table", "a much longer query about a blue wool area rug for the hall", "lamp"]
    out = tmp_path / "out"
    out.mkdir()
    gate, shipped = export_static_student(student, texts, tmp_path, out)
    assert gate["method"] != "fp32" and gate["rows"] == student.table.weight.shape[0]
    tokens = QueryTokenizer(minilm_dir() / "tokenizer.json", gate["max_tokens"])
    with torch.no_grad():
        expected = student(torch.from_numpy(tokens.ids(texts))).numpy()
    assert (shipped * expected).sum(1).min() > 0.98
    session = ort.InferenceSession(str(out / "query_static.onnx"), providers=["CPUExecutionProvider"])
    alone = session.run(None, {"input_ids": tokens.ids(texts[:1])})[0]
    assert alone[0] == pytest.approx(shipped[0], abs=1e-5)
    assert np.linalg.norm(shipped, axis=1) == pytest.approx(np.ones(3), abs=1e-4)
