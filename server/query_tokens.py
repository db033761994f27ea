"""Word-piece ids for transformer students, from the bundle's tokenizer.json through `tokenizers`.

The transformer query student was trained on exactly these ids (training/transformer_student.py tokenises
with the same file, truncation and padding), so what it is served is what it learned. Queries are short:
truncating to `max_tokens` bounds the attention cost of a pasted paragraph. The exported graph derives its
attention mask from the ids ([PAD] is 0), so one int64 matrix is the whole input, and the micro-batcher's
zero-padding of rows of different lengths is exactly [PAD] padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

PAD_ID = 0


class QueryTokenizer:
    """Texts -> input_ids, int64 [batch, longest text in the batch], padded with [PAD] = 0."""

    def __init__(self, path: str | Path, max_tokens: int) -> None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 ([CLS] and [SEP]), got {max_tokens}")
        tokenizer = Tokenizer.from_file(str(path))
        if tokenizer.token_to_id("[PAD]") != PAD_ID:
            raise ValueError(f"{path}: the tokenizer's [PAD] must be id {PAD_ID}")
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens

    def ids(self, texts: list[str]) -> np.ndarray:
        return np.array([e.ids for e in self._tokenizer.encode_batch(texts)], dtype=np.int64)
