"""Students: plain feed-forward networks over hashed n-grams (BERT2DNN), and their training loops.

Every module takes the exact padded id matrix that server/featurize.py produces, and its forward pass is
written with ONNX-exportable ops only (Gather, a mean over the ids that are not padding, Gemm), so the
exported graph is the trained one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class HashedBag(nn.Module):
    """Mean of the embeddings of a text's hashed n-gram ids; id 0 is padding and counts for nothing."""

    def __init__(self, num_buckets: int, dim: int) -> None:
        super().__init__()
        # Sparse gradients: a batch touches a few thousand of the table's rows, so only those are updated
        # (SparseAdam in `fit`); a dense Adam step over the whole table would dominate training time.
        self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0, sparse=True)
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # The padding row is zero and never trained (padding_idx), and int8 quantization keeps zero exact, so
        # padded positions add exact zeros: the sum needs no mask. Masking was a broadcast multiply over
        # [rows, ids, dim] in the exported graph, the largest op of a ScoreRelevance of 1,000 titles.
        count = (ids > 0).sum(dim=1, keepdim=True).to(torch.float32)
        return self.embedding(ids).sum(dim=1) / count.clamp(min=1.0)


class IntentStudent(nn.Module):
    """ids -> class probabilities. `logits` is used in training; forward (exported) ends in softmax."""

    def __init__(self, num_buckets: int, dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.bag = HashedBag(num_buckets, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        # Calibration temperature, fitted on dev after training (training/calibration.py) and exported
        # inside the graph, so the served probabilities are the calibrated ones.
        self.register_buffer("temperature", torch.tensor(1.0))

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.bag(ids))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(ids) / self.temperature, dim=-1)


class QueryEncoderStudent(nn.Module):
    """ids -> L2-normalized vector in the teacher's embedding space (the small tower of the two-tower)."""

    def __init__(self, num_buckets: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.bag = HashedBag(num_buckets, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.bag(ids)), dim=-1)


class RelevanceHead(nn.Module):
    """Relevance features -> probabilities of (irrelevant, partial, exact)."""

    def __init__(self, num_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features), dim=-1)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def warmup_decay(step: int, steps: int, warmup: float) -> float:
    """The learning rate's factor at `step` (from 0) of `steps`: linear from 1/w up to 1 over the first w =
    `warmup` x steps, then linear down to 1/(steps - w) at the last step. Against a constant rate, the
    decay lets a fixed number of steps settle into a minimum instead of circling it."""
    w = max(1, round(warmup * steps))
    if step < w:
        return (step + 1) / w
    return max(steps - step, 0) / max(steps - w, 1)


def fit(
    model: nn.Module,
    n: int,
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    desc: str,
    warmup: float | None = None,
) -> list[float]:
    """Adam over shuffled mini-batches; loss_fn(batch indices) gives the batch loss. Returns epoch losses.

    `learning_rate` is constant, or with `warmup` (a share of the steps) the peak of a linear warm-up and a
    linear decay to zero at the last step (`warmup_decay`)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    dense = [p for p in model.parameters() if all(p is not w for w in sparse)]
    optimizers = [torch.optim.Adam(dense, lr=learning_rate)] if dense else []
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=learning_rate))
    model.train()
    history = []
    steps = epochs * ((n + batch_size - 1) // batch_size)
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_decay(step, steps, warmup))
        for optimizer in (optimizers if warmup is not None else [])
    ]
    with tqdm(total=steps, desc=desc, unit="step", leave=False, disable=None) as bar:
        for _ in range(epochs):
            total = 0.0
            for idx in batches(n, batch_size, rng):
                loss = loss_fn(idx)
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                for schedule in schedules:
                    schedule.step()
                total += float(loss.detach()) * len(idx)
                bar.update()
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            history.append(total / n)
    model.eval()
    return history


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    soft_weight: float,
) -> torch.Tensor:
    """Hinton/BERT2DNN: KL between temperature-softened distributions (scaled by T^2) plus hard-label CE."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    ) * (temperature**2)
    if labels is None or soft_weight >= 1.0 or not bool((labels >= 0).any()):
        return soft
    # Label -1 marks an unlabelled text: it learns from the teacher alone.
    hard = F.cross_entropy(student_logits, labels, ignore_index=-1)
    return soft_weight * soft + (1.0 - soft_weight) * hard


def take(ids: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """Rows `idx` of a left-packed padded id matrix, trimmed to the widest row (padding costs compute)."""
    rows = ids[idx]
    width = max(int((rows > 0).sum(axis=1).max()), 1)
    return torch.from_numpy(np.ascontiguousarray(rows[:, :width]))
