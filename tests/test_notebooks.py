"""The tutorial notebooks in ``examples/`` run from top to bottom at a tiny budget, and are stored without outputs.

Each notebook reads ``SYNTHMED_NOTEBOOK_BUDGET``: ``tiny`` (set here) shrinks its training steps and seeds so the
whole notebook takes seconds; a reader running it gets the real budget. The kernel is the test's own Python
(ipykernel from the dev extras), run in a temporary folder so nothing lands in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "examples/ holds no tutorial notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_a_tiny_budget(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SYNTHMED_NOTEBOOK_BUDGET", "tiny")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel imports synthmed from this checkout even when the package is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
