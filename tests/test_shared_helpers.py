"""Helpers written once for the whole package (they were written twice and disagreed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.data.transforms import to_uint8
from synthmed.devices import select_device
from synthmed.io import sha256_file, truncate_csv_after_step
from synthmed.metrics.features.base import resolve_device
from synthmed.viz.grid import make_grid


def test_grids_and_saved_images_quantise_alike() -> None:
    # The grid rounded half up and saved images half to even: 2 of these 200001 values came out one level apart.
    x = np.linspace(-1, 1, 200001, dtype=np.float32).reshape(1, 1, 1, -1)
    grid = make_grid(x, nrow=1, padding=0)
    np.testing.assert_array_equal(grid[..., 0], to_uint8(x)[0, ..., 0])


def test_every_room_picks_the_same_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    assert resolve_device(None) == torch.device("mps")  # feature extractors ignored MPS before
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == resolve_device("auto") == torch.device("cpu")


def test_sha256_of_files_and_when_it_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    stat = os.stat(path)
    path.write_bytes(b"b" * 3_000_000)  # same size; the same mtime, as a fast rewrite can leave it
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sha256_file(path) == hashlib.sha256(b"b" * 3_000_000).hexdigest()  # checkpoints: always recomputed
    assert sha256_file(path, remember=True) == sha256_file(path)


def test_truncating_a_per_step_log(tmp_path: Path) -> None:
    path = tmp_path / "losses.csv"
    assert truncate_csv_after_step(path, None, header=["step", "loss"]) == []
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.")  # the last row cut short by a kill
    assert truncate_csv_after_step(path, 2) == [["1", "0.5"], ["2", "0.4"]]
    assert path.read_text() == "step,loss\n1,0.5\n2,0.4\n"
