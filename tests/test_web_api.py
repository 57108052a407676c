"""``synthmed.api.turing_study``: the organiser's study form, from Python."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

import synthmed  # noqa: E402
from synthmed.errors import SynthmedError  # noqa: E402
from synthmed.web import study_store  # noqa: E402


def write_npz(path: Path, low: int, n: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=np.random.default_rng(0).integers(low, low + 100, (n, 12, 12), dtype=np.uint8))


def test_paths_are_relative_to_the_current_directory_and_must_lie_in_root(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "runs" / "real.npz", 150)
    write_npz(tmp_path / "runs" / "fake.npz", 10)
    write_npz(tmp_path / "elsewhere" / "fake.npz", 10)
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "studies.sqlite3"
    study = synthmed.api.turing_study(database, "api", "runs/real.npz", Path("runs/fake.npz"), n_per_class=3,
                                      readers=2, root="runs", real_split="all")
    assert study.n_per_class == 3 and len(study.readers) == 2
    assert [s["id"] for s in study_store.list_studies(database)] == [study.id]
    with pytest.raises(SynthmedError, match="outside the runs folder") as error:
        synthmed.api.turing_study(database, "api", "runs/real.npz", "elsewhere/fake.npz", n_per_class=3,
                                  readers=1, root="runs", real_split="all")
    assert "\n" not in str(error.value)
    allowed = synthmed.api.turing_study(database, "api 2", "runs/real.npz", "elsewhere/fake.npz", n_per_class=3,
                                        readers=1, root="runs", source_dirs=("elsewhere",), real_split="all")
    assert allowed.synthetic_source.startswith(str(tmp_path / "elsewhere" / "fake.npz"))
