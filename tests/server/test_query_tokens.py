"""The transformer student's input: the bundle tokenizer's word pieces, [PAD] = 0, truncated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

from server.query_tokens import QueryTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "oak", "coffee", "table", "##s", "velvet", "chair"]


def _tokenizer(tmp_path: Path, vocab: list[str] = VOCAB) -> Path:
    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = BertNormalizer(lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_ids_are_word_pieces_padded_with_zero(tmp_path: Path) -> None:
    tokens = QueryTokenizer(_tokenizer(tmp_path), max_tokens=32)
    ids = tokens.ids(["Oak Tables", "velvet chair", "zebra"])
    assert ids.dtype.name == "int64" and ids.shape == (3, 5)
    assert ids[0].tolist() == [2, 4, 6, 7, 3]  # [CLS] oak table ##s [SEP]
    assert ids[1].tolist() == [2, 8, 9, 3, 0]  # padded with [PAD] = 0
    assert ids[2].tolist() == [2, 1, 3, 0, 0]  # an unknown word is [UNK]


def test_long_queries_are_truncated(tmp_path: Path) -> None:
    tokens = QueryTokenizer(_tokenizer(tmp_path), max_tokens=4)
    assert tokens.ids(["oak coffee table chair chair"]).shape == (1, 4)


def test_a_tokenizer_whose_pad_is_not_zero_is_refused(tmp_path: Path) -> None:
    path = _tokenizer(tmp_path, ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "oak"])
    with pytest.raises(ValueError, match=r"\[PAD\] must be id 0"):
        QueryTokenizer(path, max_tokens=8)
    assert json.loads(path.read_text())["model"]["type"] == "WordPiece"


def test_max_tokens_below_two_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        QueryTokenizer(_tokenizer(tmp_path), max_tokens=1)
