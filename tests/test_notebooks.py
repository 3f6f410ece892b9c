"""Every notebook executes from top to bottom, offline, on the installed package."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_per_area():
    names = " ".join(path.name for path in NOTEBOOKS)
    for area in ("schedules", "uncertainty", "transfer", "constraints"):
        assert area in names, f"no notebook for {area}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert all(
        cell.get("outputs") is not None
        for cell in notebook.cells
        if cell.cell_type == "code"
    )
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {}}
    )
    client.execute(cwd=str(tmp_path))
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
