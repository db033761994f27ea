"""The product ANN index: a usearch index opened memory-mapped, so it is never copied into the heap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from usearch.index import Index


class ProductIndex:
    """Keys are product rows 0..count-1; the id map lives in the bundle's products.json."""

    def __init__(self, path: Path) -> None:
        self._index = Index.restore(str(path), view=True)
        if self._index is None:
            raise ValueError(f"{path.name}: not a usearch index")

    @property
    def dim(self) -> int:
        return int(self._index.ndim)

    @property
    def metric(self) -> str:
        return str(self._index.metric_kind.name).lower()

    def __len__(self) -> int:
        return len(self._index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k rows and cosine similarities, nearest first."""
        matches = self._index.search(query, k)
        return matches.keys.astype(np.int64), 1.0 - matches.distances.astype(np.float32)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of these rows, float32 [len(rows), dim]."""
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(self._index.get(rows.astype(np.uint64))).astype(np.float32)

    def exact_search(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the given rows (used for category filters)."""
        k = min(k, len(rows))
        if k == 0:
            return rows[:0], np.zeros(0, dtype=np.float32)
        scores = self.vectors(rows) @ query
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.argsort(-scores[top], kind="stable")]
        return rows[top], scores[top]
