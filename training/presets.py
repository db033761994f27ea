"""Training presets, sized for 2 CPU cores. `tiny` is the embedded default (<= 3 minutes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    num_products: int
    """Synthetic catalogue size (ignored when --data gives a catalogue)."""
    queries_per_product: int
    """Random title substrings per product, labelled by the teacher (catalogue pre-training)."""
    heldout_fraction: float
    """Share of products whose queries are kept out of training, for evaluation."""
    num_buckets: int
    """Hashed n-gram id space of the students."""
    intent_dim: int
    intent_hidden: int
    encoder_dim: int
    epochs: int
    batch_size: int
    learning_rate: float
    temperature: float
    """Distillation temperature: teacher and student logits are divided by it (BERT2DNN / Hinton)."""
    soft_weight: float
    """Weight of the soft (teacher) loss; the rest goes to the hard labels."""
    teacher_epochs: int
    """Epochs of the teacher's intent head on frozen MiniLM embeddings."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        num_products=1500,
        queries_per_product=6,
        heldout_fraction=0.1,
        num_buckets=1 << 16,
        intent_dim=48,
        intent_hidden=128,
        encoder_dim=96,
        epochs=6,
        batch_size=256,
        learning_rate=3e-3,
        temperature=2.0,
        soft_weight=0.7,
        teacher_epochs=40,
    ),
}
PRESETS["default"] = replace(
    PRESETS["tiny"],
    name="default",
    num_products=6000,
    queries_per_product=8,
    num_buckets=1 << 17,
    intent_dim=64,
    intent_hidden=256,
    encoder_dim=128,
    epochs=10,
)
PRESETS["full"] = replace(
    PRESETS["default"],
    name="full",
    num_products=20000,
    queries_per_product=12,
    num_buckets=1 << 18,
    epochs=12,
)
