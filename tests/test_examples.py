"""The example notebook, executed headlessly against the real server it starts."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOK = ROOT / "examples" / "profile_ensemble.ipynb"


@pytest.mark.server
@pytest.mark.timeout(240)
def test_the_example_notebook_runs(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    shown = [output.data for output in outputs if output.output_type == "execute_result"]
    tables = [data["text/html"] for data in shown if "text/html" in data]
    assert any("Bound: " in table for table in tables)  # the result
    assert any("peak throughput" in table for table in tables)  # the comparison
    assert sum("image/png" in data for data in shown) == 3  # the curve, the steps, the comparison
    printed = "".join(output.text for output in outputs if output.output_type == "stream")
    assert "preprocessing ready: True" in printed and "reopened: True" in printed
    assert "bound: " in printed and "limit about" in printed  # the diagnosis
    assert "first token" in printed and "bounds the gaps" in printed  # the token streams' figures and breakdown
