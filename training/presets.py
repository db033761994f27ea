"""Training presets, sized for 2 CPU cores, and the switchable methods every ablation turns off one by one.

`tiny` is for tests (<= 3 minutes), `default` is the README's main command (<= 15 minutes), `full` is the
best bundle (hours; resumable stage by stage).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Methods:
    """The papers' methods; each can be switched off to measure the student without it."""

    substrings: bool = True
    """Catalogue pre-training (JD): random title substrings labelled with the product's category (intent)
    or paired with the product itself (retrieval)."""
    label_queries: bool = True
    """Queries generated from label names with modifiers, substrings and recombination (cold start)."""
    augmentation: bool = True
    """Augmented copies of real queries in the unlabelled distillation set."""
    vocabulary: bool = True
    """Vocabulary words, alone and before label names, labelled by the teacher: words no data here holds."""
    soft_labels: bool = True
    """BERT2DNN: distil from the teachers' temperature-softened soft labels; off = hard labels only."""
    teachers: tuple[str, ...] = ("minilm",)
    """Intent teachers; two or more are stacked (their softened distributions averaged)."""
    teacher_finetune: bool = True
    """Fine-tune the teacher (from its zero-shot label prototypes); off = zero-shot teacher."""
    product_teacher: str = "minilm"
    """The big tower of the asymmetric two-tower: embeds products offline (minilm or mpnet)."""
    views: int = 2
    """Vectors per product in the index (1 = the title; 2 adds category + title)."""
    encoder_general_texts: bool = True
    """The hashed query encoder also learns the product teacher's vectors of the query student's general
    texts (vocabulary words and runs of them, training/query_student.py distillation_texts), not only of
    catalogue substrings: ScoreRelevance's cosine feature takes the query's vector from it, and real queries
    hold words no catalogue here has."""
    tiered_relevance: bool = True
    """Relevance as a recall head (relevant or not) and a refine head (exact or partial), one gate per step
    up the data's grades (training/relevance_text.py tiered_probabilities); off = one softmax over them."""
    rules: bool = True
    """Golden pre-rules and corrective post-rules mined from training data, kept at >= 95% dev precision."""
    cross_encoder: bool = True
    """Relevance student distilled from a fine-tuned cross-encoder teacher; off = catalogue labels only."""
    relevance_teacher: str = "stacked"
    """What the relevance students distil: "stacked", the cross-encoder's grade log-probabilities and the
    bi-encoders' (query, title) cosines (MiniLM; mpnet too when `teachers` holds it) through a logistic
    regression fitted on the dev pairs (training/relevance_stack.py); "cross_encoder", the cross-encoder
    alone (the previous teacher, kept as the ablation)."""
    relevance_student: str = "text"
    """"text": the student reads the query's and title's hashed n-grams, their interactions and the four
    features (training/relevance_text.py, manifest kind text_mlp); "features": the MLP over the four
    features alone (kind feature_mlp), as bundles before it."""
    relevance_cosine: str = "query_static"
    """Which query model's vector the relevance students' cosine feature takes (training and serving alike):
    "query_static" (the default), a static word-piece model of MiniLM's whole vocabulary
    (training/static_student.py), trained for it and shipped beside it: a lookup and a mean (0.04 ms a
    call), nearer the teacher on real query text than the hashed encoder (reports/catalogue-minilm: the
    relevance student's fixed-set Spearman 0.751 against 0.657); "query_encoder", the hashed n-gram
    encoder, as bundles before it; "query_student", the transformer query student when retrieval ships
    one (0.784 there, for about 1.4 ms more per ScoreRelevance call: benchmarks/results/relevance-cosine)."""


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    num_products: int
    """Synthetic catalogue size (ignored when --data gives a catalogue)."""
    queries_per_product: int
    """Random title substrings per product (catalogue pre-training)."""
    label_queries_per_label: int
    """Generated queries per intent label."""
    vocabulary_queries: int
    """Queries built from the teacher's vocabulary (unlabelled; the teacher labels them)."""
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
    """Weight of the soft (teacher) loss; the rest goes to the hard labels, where a text has one."""
    teacher_epochs: int
    teacher_train_top: int
    """Teacher fine-tuning trains only this many top layers; the rest are frozen and their output cached:
    most of the gain at a fraction of the time (the layer-freezing result; see the report's table)."""
    teacher_max_texts: int
    """Cap on the teacher's fine-tuning set (a random sample)."""
    relevance_queries: int
    """Queries whose candidate lists make the relevance training pairs."""
    cross_encoder_pairs: int
    """Labelled pairs the cross-encoder teacher is fine-tuned on."""
    relevance_distill_pairs: int = 8000
    """Unlabelled (query, product) pairs the cross-encoder labels for the text relevance student."""
    relevance_word_runs: float = 0.0
    """Share of those pairs' generated query texts that are random runs of vocabulary words."""
    relevance_dim: int = 32
    relevance_hidden: int = 128
    relevance_epochs: int = 8
    relevance_temperature: float = 4.0
    """The text relevance student's distillation temperature (the report sweeps 1, 2 and 4)."""
    query_student: str = "transformer"
    """The online query tower: "transformer" (MiniLM's bottom layers, served through tokenizers) or
    "hashed" (the hashed n-gram MLP alone). The hashed encoder is trained either way: relevance uses it."""
    query_student_layers: tuple[int, ...] = (0, 3, 5)
    """MiniLM layers kept of its six (layer dropping), bottom first: the write-ups' three-layer query BERT.
    Spread up to the top layer rather than the bottom three: the student then starts from the teacher's own
    output space, and on real shoppers' queries it lands much nearer its teacher (the report's query_levers
    part)."""
    query_student_embedding: str = "factorized"
    """"factorized": the whole word-piece vocabulary as a low-rank table (no real word becomes [UNK]);
    "pruned": full-width rows for the word pieces the training texts use, then the most frequent others."""
    query_student_epochs: int = 2
    """The default preset runs six. Against four, on the report's real_queries part (793 real queries), they
    lift the int8 student's overlap@10 with its teacher through the index from 0.692 to 0.702 and its mean
    cosine from 0.944 to 0.947; the retrieval stage takes about nine minutes more on 2 cores."""
    query_student_vocabulary: int = 50000
    """General texts in the query student's distillation set (vocabulary words and runs of them,
    teacher-labelled): on real queries they matter more than more catalogue text."""
    query_student_catalogue_texts: int = 15000
    """Title substrings (a random sample) in the query student's distillation set, besides every title."""
    query_static_epochs: int = 8
    """Epochs tuning the static word-piece model (training/static_student.py) on the query student's
    distillation set, when the relevance cosine takes its vectors (Methods.relevance_cosine)."""
    min_retention: float = 0.97
    """A student below this share of its teacher's quality is refused at export (unless --force)."""
    methods: Methods = field(default_factory=Methods)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        num_products=1500,
        queries_per_product=6,
        label_queries_per_label=40,
        vocabulary_queries=4000,
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
        teacher_epochs=2,
        teacher_train_top=1,
        teacher_max_texts=6000,
        relevance_queries=600,
        cross_encoder_pairs=3000,
        query_student_layers=(0, 5),
        query_student_epochs=1,
        query_student_vocabulary=3000,
        query_student_catalogue_texts=3000,
        query_static_epochs=2,
    ),
}
PRESETS["default"] = replace(
    PRESETS["tiny"],
    name="default",
    num_products=6000,
    queries_per_product=8,
    label_queries_per_label=150,
    vocabulary_queries=20000,
    num_buckets=1 << 17,
    intent_dim=64,
    intent_hidden=256,
    # 2^17 buckets x 72 dims keeps the query encoder under 10% of BERT-base (11M parameters) even with a
    # 768-dim product tower (mpnet).
    encoder_dim=72,
    epochs=10,
    teacher_epochs=3,
    teacher_train_top=2,
    teacher_max_texts=20000,
    relevance_queries=4000,
    cross_encoder_pairs=6000,
    # 33x the cross-encoder's labelled pairs; half are query texts against what retrieval returns, half of
    # those runs of vocabulary words: on the 793 real queries the served student ranks nearer its teacher
    # with each (README, "Relevance on real query text").
    relevance_distill_pairs=200000,
    relevance_word_runs=0.5,
    relevance_dim=48,
    relevance_hidden=192,
    query_student_layers=(0, 3, 5),
    query_student_epochs=6,
    query_student_vocabulary=50000,
    query_student_catalogue_texts=15000,
    query_static_epochs=8,
)
PRESETS["full"] = replace(
    PRESETS["default"],
    name="full",
    num_products=20000,
    queries_per_product=12,
    label_queries_per_label=400,
    vocabulary_queries=100000,
    epochs=12,
    teacher_epochs=4,
    teacher_train_top=4,
    teacher_max_texts=60000,
    relevance_queries=10000,
    cross_encoder_pairs=20000,
    relevance_distill_pairs=1_000_000,
    methods=Methods(teachers=("minilm", "mpnet"), product_teacher="mpnet", views=3),
)
