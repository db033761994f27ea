"""Synthetic queries from product titles (catalogue pre-training, JD CIKM 2022): a random contiguous span of
a title's words stands in for what a shopper types, labelled with the product (retrieval) and its category
(intent). Sometimes the last word is cut short, as when a user is still typing."""

from __future__ import annotations

import random
from dataclasses import dataclass

from server.featurize import Featurizer


@dataclass(frozen=True, slots=True)
class SyntheticQuery:
    text: str
    product_row: int
    category: int


def title_substrings(
    titles: list[str],
    categories: list[int],
    rows: list[int],
    per_product: int,
    featurizer: Featurizer,
    seed: int,
) -> list[SyntheticQuery]:
    rng = random.Random(seed)
    out = []
    for row in rows:
        words = featurizer.words(titles[row])
        if not words:
            continue
        for _ in range(per_product):
            length = min(len(words), rng.choice((1, 2, 2, 3, 3, 4, 5)))
            start = rng.randrange(len(words) - length + 1)
            span = words[start : start + length]
            if len(span[-1]) > 4 and rng.random() < 0.15:
                span = [*span[:-1], span[-1][: rng.randrange(3, len(span[-1]))]]
            out.append(SyntheticQuery(" ".join(span), row, categories[row]))
    return out
