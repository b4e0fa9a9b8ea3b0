"""The notebooks: they run end to end (short), open in Colab and need no network.

All notebooks are executed with nbclient on a ``python3`` kernel of the running
interpreter, with ``GARO_NOTEBOOK_STEPS`` set small, in one test (so that
pytest-xdist does not run them twice); any cell error fails it.
"""

import asyncio
import pathlib
import re
import sys

import jupyter_client
import nbclient
import nbformat
import pytest
from ipykernel import kernelspec
from jupyter_client.kernelspec import KernelSpecManager

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
STEPS = "10"
COLAB = (
  "https://colab.research.google.com/github/garo-optax/garo_optax/blob/main/notebooks/"
)
INSTALL = '%pip install -q "garo_optax[examples] @ git+https://github.com/garo-optax/garo_optax"'


def _code_cells(notebook):
  return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _outputs(notebook):
  return [output for cell in _code_cells(notebook) for output in cell.outputs]


def test_there_are_notebooks():
  assert [path.name for path in NOTEBOOKS] == [
    "01_quickstart.ipynb",
    "02_optax_pipelines.ipynb",
    "03_layerwise_and_meta.ipynb",
  ]


def _execute_all(notebooks, workdir):
  """Executes notebooks one after another in one kernel; returns the error of
  each (or None).

  Before each notebook the kernel forgets every name (``%reset -f``) and moves
  to an empty directory of its own, so a notebook that needs another's names
  or files fails as it would alone. What they share is the kernel's start, its
  imports and its compilations: a quarter less work than a kernel each.
  """

  async def run_all():
    manager = jupyter_client.AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel(cwd=str(workdir))
    errors = []
    try:
      for i, notebook in enumerate(notebooks):
        path = workdir / f"run_{i}"
        path.mkdir()
        notebook.cells.insert(0, nbformat.v4.new_code_cell(f"%reset -f\n%cd -q {path}"))
        client = nbclient.NotebookClient(notebook, km=manager, timeout=600)
        try:
          await client.async_execute()  # raises CellExecutionError on a cell error
        except Exception as error:  # reported by the caller
          errors.append(error)
        else:
          errors.append(None)
        finally:
          del notebook.cells[0]
    finally:
      await manager.shutdown_kernel(now=True)
    return errors

  return asyncio.run(run_all())


def test_notebooks_run(tmp_path, monkeypatch):
  # A `python3` kernelspec that runs this interpreter, found before any other.
  kernelspec.write_kernel_spec(str(tmp_path / "jupyter" / "kernels" / "python3"))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  monkeypatch.setenv("GARO_NOTEBOOK_STEPS", STEPS)
  monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend
  assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable

  notebooks = [nbformat.read(path, as_version=4) for path in NOTEBOOKS]
  # A control, run last: every notebook defines STEPS, and the control must
  # fail to find it (each notebook starts with no names) and be reported.
  control = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("STEPS")])
  *errors, control_error = _execute_all([*notebooks, control], tmp_path)

  assert isinstance(control_error, nbclient.exceptions.CellExecutionError)
  assert "NameError" in str(control_error)
  failed = [
    f"{path.name}:\n{error}"
    for path, error in zip(NOTEBOOKS, errors, strict=True)
    if error is not None
  ]
  assert not failed, "\n\n".join(failed)
  for path, notebook in zip(NOTEBOOKS, notebooks, strict=True):
    assert any("image/png" in o.get("data", {}) for o in _outputs(notebook)), path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_opens_in_colab_and_needs_no_network(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  assert notebook.metadata.kernelspec.name == "python3"
  assert notebook.cells[0].cell_type == "markdown"
  assert f"]({COLAB}{path.name})" in notebook.cells[0].source
  install, *rest = _code_cells(notebook)
  assert INSTALL in install.source
  assert install.source.startswith("# On Colab")
  assert "except ImportError:" in install.source
  for cell in rest:
    assert "://" not in cell.source, cell.source
    assert not re.search(r"^\s*(!|%pip|%%(bash|sh|script))", cell.source, re.M)
  assert any("GARO_NOTEBOOK_STEPS" in cell.source for cell in rest)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_shows_its_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  outputs = _outputs(notebook)
  assert not [output for output in outputs if output.output_type == "error"]
  assert any("image/png" in output.get("data", {}) for output in outputs)
  assert all(cell.execution_count for cell in _code_cells(notebook))
