"""server/manifest_parts.py's parts hash: the sha256 of each PART_BYTES part's sha256, in order, whether the
parts are read through a memory map on a pool of threads or by hand here."""

from __future__ import annotations

import hashlib
from pathlib import Path

from server.manifest_parts import PART_BYTES, parts_sha256


def _by_hand(data: bytes) -> str:
    parts = [data[at : at + PART_BYTES] for at in range(0, max(len(data), 1), PART_BYTES)]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


def test_parts_hash_of_a_file_of_several_parts_an_empty_one_and_a_small_one(tmp_path: Path) -> None:
    contents = {
        "two_parts.bin": bytes(range(256)) * (PART_BYTES // 256) + b"tail of the second part",
        "empty.bin": b"",
        "small.json": b'{"a": 1}',
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in contents]
    assert parts_sha256(paths, threads=2) == [_by_hand(data) for data in contents.values()]
    assert parts_sha256(paths, threads=1) == parts_sha256(paths, threads=2)
