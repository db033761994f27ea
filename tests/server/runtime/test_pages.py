"""server/runtime/pages.py: a bundle's mapped files found in /proc/self/maps and mapped into the page
tables at load, so that reading them afterwards takes no page faults."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from server.runtime.pages import file_mappings, populate

# Touches 4 MiB apart: one fault maps a whole folio of the page cache (up to 2 MiB) and the pages around
# it, so only touches this far apart each take their own fault, as a product lookup's random rows do.
STRIDE = 1 << 20  # int32 elements: 4 MiB
TOUCHES = 32


def _mapped(directory: Path, name: str, touches: int = TOUCHES) -> np.ndarray:
    np.save(directory / name, np.arange(touches * STRIDE, dtype=np.int32), allow_pickle=False)
    return np.load(directory / name, mmap_mode="r", allow_pickle=False)


def _faults_reading(array: np.ndarray) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    int(array[::STRIDE].sum())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_only_the_directorys_files_are_found(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle-other").mkdir()  # a sibling whose name starts the same is not inside
    inside = _mapped(tmp_path / "bundle", "a.npy", touches=1)
    outside = _mapped(tmp_path / "bundle-other", "b.npy", touches=1)
    found = file_mappings(tmp_path / "bundle")
    assert len(found) == 1 and found[0][1] - found[0][0] >= inside.nbytes
    assert outside.nbytes and len(file_mappings(tmp_path / "bundle-other")) == 1


def test_mappings_are_parsed_from_the_maps_file(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        f"7f0000000000-7f0000400000 r--s 00000000 00:1f 123 {tmp_path}/b/index.usearch\n"
        f"7f0000400000-7f0000401000 ---p 00000000 00:1f 124 {tmp_path}/b/guard\n"
        "7f0000500000-7f0000600000 r-xp 00000000 00:1f 125 /usr/lib/libc.so.6\n"
        "7f0000600000-7f0000700000 rw-p 00000000 00:00 0 \n"
    )
    (tmp_path / "b").mkdir()
    assert file_mappings(tmp_path / "b", maps) == [(0x7F0000000000, 0x7F0000400000)]
    assert file_mappings(tmp_path / "b", tmp_path / "missing") == []


def test_populated_pages_are_read_without_faults(tmp_path: Path) -> None:
    cold = _mapped(tmp_path, "cold.npy")
    assert _faults_reading(cold) >= TOUCHES // 2
    del cold
    (tmp_path / "cold.npy").unlink()
    warm = _mapped(tmp_path, "warm.npy")
    done = populate(tmp_path)
    if done == 0:
        pytest.skip("this kernel has no MADV_POPULATE_READ (Linux < 5.14)")
    assert done >= warm.nbytes
    assert _faults_reading(warm) <= 2
