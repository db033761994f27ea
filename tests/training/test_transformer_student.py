"""The small transformer student: under budget, learns from a teacher, and exports faithfully to ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from onnxruntime.quantization import QuantType, quantize_dynamic

from training.export import QUANT_OPS
from training.teachers import minilm_dir
from training.transformer_student import (
    PARAMETER_BUDGET,
    TransformerStudent,
    build_transformer_student,
    count_parameters,
    distil_transformer_student,
    encode_texts,
    export_transformer_onnx,
    factorized_student,
    full_encoder,
)

PRODUCTS = ["running shoes", "wireless headphones", "green tea", "water bottle", "desk lamp", "yoga mat"]
QUALIFIERS = ["red", "cheap", "kids", "organic", "large", "best", "waterproof", "portable"]
TEXTS = [f"{q} {p}" for q in QUALIFIERS for p in PRODUCTS]
LABELS = np.array([PRODUCTS.index(t.split(" ", 1)[1]) for t in TEXTS])
UNSEEN = "zygomorphic xylophone for quokkas"


@pytest.fixture(scope="module")
def teacher_dir() -> Path:
    return minilm_dir()


def test_two_layer_student_is_under_budget(teacher_dir: Path) -> None:
    student, tokenizer = build_transformer_student(
        teacher_dir, TEXTS, num_layers=2, num_classes=len(PRODUCTS)
    )
    assert len(student.layers) == 2
    assert count_parameters(student) < PARAMETER_BUDGET
    # The whole teacher vocabulary would not fit: the table really is pruned, and the remap is no parameter.
    assert student.word_embeddings.num_embeddings < 30522
    assert student.remap is not None and student.remap.dtype == torch.int64
    assert count_parameters(student) == sum(p.numel() for p in student.parameters())
    assert all(p.data_ptr() != student.remap.data_ptr() for p in student.parameters())
    # Every id the training texts use keeps its own row; a dropped id lands on [UNK]'s row.
    unk = int(student.remap[tokenizer.token_to_id("[UNK]")])
    seen = {i for e in tokenizer.encode_batch(TEXTS) for i in e.ids}
    assert all(int(student.remap[i]) != unk for i in seen if i != tokenizer.token_to_id("[UNK]"))
    unseen = [i for i in tokenizer.encode(UNSEEN).ids if int(student.remap[i]) == unk]
    assert unseen, "the test text should contain a token outside the pruned vocabulary"


def test_student_starts_as_the_teachers_bottom_layers(teacher_dir: Path) -> None:
    student, _ = build_transformer_student(teacher_dir, TEXTS, num_layers=3)
    teacher = full_encoder(teacher_dir)
    for ours, theirs in zip(student.layers, teacher.layers[:3], strict=True):
        assert torch.equal(ours.query.weight, theirs.query.weight)
        assert torch.equal(ours.output_norm.bias, theirs.output_norm.bias)
    token = 2300  # "water": in TEXTS, so kept
    assert torch.equal(
        student.word_embeddings.weight[int(student.remap[token])], teacher.word_embeddings.weight[token]
    )


def test_classifier_distillation_loss_falls(teacher_dir: Path) -> None:
    student, tokenizer = build_transformer_student(
        teacher_dir, TEXTS, num_layers=2, num_classes=len(PRODUCTS)
    )
    # A confident "teacher": logits that favour the true product.
    soft = np.eye(len(PRODUCTS), dtype=np.float32)[LABELS] * 4.0
    losses = distil_transformer_student(
        student,
        tokenizer,
        TEXTS,
        soft_targets=soft,
        hard_labels=LABELS,
        epochs=4,
        batch_size=16,
        learning_rate=3e-4,
    )
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    ids, mask = encode_texts(tokenizer, TEXTS)
    with torch.no_grad():
        predicted = student(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(-1).numpy()
    assert (predicted == LABELS).mean() > 0.5


def test_embedding_distillation_loss_falls(teacher_dir: Path) -> None:
    teacher = full_encoder(teacher_dir)
    student, tokenizer = build_transformer_student(teacher_dir, TEXTS, num_layers=2)
    ids, mask = encode_texts(tokenizer, TEXTS)
    with torch.no_grad():
        targets = teacher(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    losses = distil_transformer_student(
        student, tokenizer, TEXTS, embedding_targets=targets, epochs=4, batch_size=16, learning_rate=2e-4
    )
    assert losses[-1] < losses[0]


def _onnx_matches(student: TransformerStudent, tokenizer, path: Path, output: str) -> None:
    export_transformer_onnx(student, tokenizer, path)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == [output]
    first_gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert first_gather.input == ["remap", "input_ids"]
    # Each layer's attention is one fused onnxruntime node, not the traced reshapes and softmax.
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == len(student.layers)
    assert ops.count("Softmax") == (output == "probabilities")  # only a classifier's own output
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Different batch sizes and lengths (dynamic axes), and a text with tokens outside the vocabulary.
    for texts in ([*TEXTS[:5], UNSEEN], [UNSEEN], ["tea"]):
        ids, mask = encode_texts(tokenizer, texts)
        got = session.run([output], {"input_ids": ids, "attention_mask": mask})[0]
        with torch.no_grad():
            want = student(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_classifier_onnx_matches_pytorch(teacher_dir: Path, tmp_path: Path) -> None:
    student, tokenizer = build_transformer_student(
        teacher_dir, TEXTS, num_layers=2, num_classes=len(PRODUCTS)
    )
    with torch.no_grad():
        student.head.weight.normal_(std=0.5)  # spread the probabilities so a mismatch would show
    _onnx_matches(student, tokenizer, tmp_path / "intent.onnx", "probabilities")


def test_embedding_onnx_matches_pytorch(teacher_dir: Path, tmp_path: Path) -> None:
    student, tokenizer = build_transformer_student(teacher_dir, TEXTS, num_layers=2, out_dim=64)
    _onnx_matches(student, tokenizer, tmp_path / "encoder.onnx", "embedding")
    ids, mask = encode_texts(tokenizer, [UNSEEN])
    with torch.no_grad():
        vector = student(torch.from_numpy(ids), torch.from_numpy(mask))
    assert vector.shape == (1, 64)
    assert torch.allclose(vector.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_fused_attention_survives_int8(teacher_dir: Path, tmp_path: Path) -> None:
    """Dynamic quantization turns each fused Attention into one QAttention, and the int8 student still puts
    texts (padded batches included) where the PyTorch student does."""
    student, tokenizer = factorized_student(teacher_dir, 2)
    export_transformer_onnx(student, tokenizer, tmp_path / "fp32.onnx")
    quantize_dynamic(  # per channel, as the parity gate's second scheme (training/onnx_teacher.py)
        str(tmp_path / "fp32.onnx"),
        str(tmp_path / "int8.onnx"),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANT_OPS,
        per_channel=True,
    )
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("QAttention") == 2 and "Attention" not in ops
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    ids, mask = encode_texts(tokenizer, [*TEXTS[:7], UNSEEN])
    got = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = student(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert (got * want).sum(1).min() > 0.98


def test_factorized_student_keeps_the_whole_vocabulary_under_budget(teacher_dir: Path) -> None:
    student, tokenizer = factorized_student(teacher_dir, 3)
    assert count_parameters(student) < PARAMETER_BUDGET
    assert student.remap is None and student.word_embeddings.num_embeddings == tokenizer.get_vocab_size()
    assert student.word_projection is not None
    # At initialisation the low-rank table reproduces the teacher's, as far as its rank allows.
    ids, mask = encode_texts(tokenizer, TEXTS)
    with torch.no_grad():
        vectors = student(torch.from_numpy(ids), torch.from_numpy(mask))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-4)


def test_a_student_takes_the_teacher_layers_it_is_given(teacher_dir: Path) -> None:
    """Layer dropping may keep every other layer: layer i of the student is the teacher's picked[i]."""
    from safetensors.torch import load_file

    weights = load_file(str(teacher_dir / "model.safetensors"))
    student, _ = factorized_student(teacher_dir, (0, 2, 4))
    assert len(student.layers) == 3
    for i, layer in enumerate((0, 2, 4)):
        theirs = weights[f"encoder.layer.{layer}.attention.self.query.weight"]
        assert torch.equal(student.layers[i].query.weight, theirs)
    for bad in ((), (2, 1), (0, 0), (0, 6)):
        with pytest.raises(ValueError, match="layers must be distinct teacher layers"):
            factorized_student(teacher_dir, bad)
