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
@pytest.mark.backends(
    "tensorflow",
    reason="the notebooks are executed once, on the default backend (minutes each)",
)
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


def test_saved_notebooks_are_the_built_ones_with_their_explanations():
    """Cheap (no execution): the saved notebooks hold exactly the cells of
    `notebooks/make_notebooks.py`, explanations of the printed numbers included."""
    import importlib.util

    path = Path(__file__).parents[1] / "notebooks" / "make_notebooks.py"
    spec = importlib.util.spec_from_file_location("make_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, cells in module.NOTEBOOKS.items():
        expected = module.with_explanations(name, cells)
        saved = nbformat.read(path.parent / name, as_version=4).cells
        assert [(c.cell_type, c.source) for c in saved] == [
            ("markdown" if kind == "md" else "code", source)
            for kind, source in expected
        ], name
        explained = module.EXPLANATIONS.get(name, {})
        assert explained, f"{name}: no explanation of its numbers"
        assert all(cells[index][0] == "code" for index in explained), name
