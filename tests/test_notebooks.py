"""Execute every notebook in notebooks/ and fail on any cell error.

The notebooks reproduce the tables of "A beginner tutorial for CNN" and assert
that cnnblas agrees with them, so running them is a test. New notebooks are
picked up by the glob. Their printed output must stay readable: no line of a
stored or freshly computed text output may be wider than ``MAX_LINE``
characters (``notebooks/_tutorial_tables.py`` lays its tables out for the same
limit).

The kernel must be this interpreter (the project's venv), not whatever
``python3`` kernelspec the machine happens to have: a kernelspec that launches
``sys.executable`` is written to a temporary directory that goes first on
``JUPYTER_PATH``, and the repository root is put on the kernel's ``PYTHONPATH``
so that ``import cnnblas`` works without an installed package. The notebooks
are executed in memory; the files on disk are never rewritten.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL = "python3"
MAX_LINE = 120


def _joined(*parts: str | None) -> str:
    return os.pathsep.join(p for p in parts if p)


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """Make kernel ``python3`` mean this interpreter for the tests of this module."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (cnnblas tests)",
        "language": "python",
        "env": {"PYTHONPATH": _joined(str(ROOT), os.environ.get("PYTHONPATH"))},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_PATH", _joined(str(jupyter_dir), os.environ.get("JUPYTER_PATH")))
    yield KERNEL
    patch.undo()


def _execute(nb, kernel_name: str) -> None:
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name=kernel_name,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError (with the traceback) on the first failing cell


def test_kernel_runs_this_interpreter(venv_kernel):
    cell = nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)\nprint(sys.executable)")
    nb = nbformat.v4.new_notebook(cells=[cell])
    _execute(nb, venv_kernel)
    prefix, executable = nb.cells[0].outputs[0]["text"].split()
    assert prefix == sys.prefix
    assert executable == sys.executable


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


def _wide_lines(nb):
    """(cell index, line) for every text output line wider than ``MAX_LINE``."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                text = out.get("text", "")
            elif kind in ("display_data", "execute_result"):
                text = out.get("data", {}).get("text/plain", "")
            else:                       # an error output fails the execution test anyway
                continue
            yield from ((index, line) for line in text.splitlines() if len(line) > MAX_LINE)


def _assert_narrow(nb, what: str) -> None:
    wide = list(_wide_lines(nb))
    if wide:
        index, line = wide[0]
        pytest.fail(f"{what}: {len(wide)} output line(s) wider than {MAX_LINE} characters; "
                    f"the first, in cell {index}, has {len(line)}: {line[:100]!r}...")


def test_wide_lines_are_found():
    narrow = nbformat.v4.new_code_cell("print('x')")
    narrow.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * MAX_LINE)]
    wide = nbformat.v4.new_code_cell("x")
    wide.outputs = [nbformat.v4.new_output("execute_result", execution_count=1,
                                           data={"text/plain": "y" * (MAX_LINE + 1)})]
    nb = nbformat.v4.new_notebook(cells=[narrow, wide])
    assert [(i, len(line)) for i, line in _wide_lines(nb)] == [(1, MAX_LINE + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_outputs_fit_the_line_width(path):
    _assert_narrow(nbformat.read(path, as_version=4), f"{path.name} (stored outputs)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_without_errors(path, venv_kernel):
    nb = nbformat.read(path, as_version=4)
    _execute(nb, venv_kernel)
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    _assert_narrow(nb, f"{path.name} (fresh outputs)")
