"""The walkthrough notebook: committed without outputs, calling only the package, and it runs.

The execution test starts a real Jupyter kernel on this interpreter (a kernel spec
written to a temporary ``JUPYTER_PATH``, so no globally installed kernel is picked up)
with a temporary working folder, runs every cell and checks what a reader should see.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "1.0-lead-scoring-walkthrough.ipynb"
#: What the notebook may import: the package's own modules, standard library glue,
#: numpy/pandas for display. Model, feature and metric code must come from the package.
ALLOWED_IMPORTS = {"features", "models", "training", "json", "shutil", "tempfile", "pathlib"}
ALLOWED_IMPORTS |= {"numpy", "pandas"}
LEAD_LINE = re.compile(r"^Lead (\S+): category (sql|mql|nurture), score (\d+), grade ([A-D])")


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_committed_without_outputs(notebook):
    for i, cell in enumerate(_code_cells(notebook)):
        assert cell.outputs == [], f"code cell {i} has outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"code cell {i} has execution timings"
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_cells_only_call_the_package(notebook):
    for cell in _code_cells(notebook):
        source = cell.source
        assert not re.search(r"^\s*(def|class|lambda)\b", source, re.M), source
        for match in re.finditer(r"^\s*(?:from|import)\s+([\w.]+)", source, re.M):
            assert match.group(1).split(".")[0] in ALLOWED_IMPORTS, match.group(0)
        assert "mlflow" not in source


@pytest.fixture
def kernel_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``python3`` kernel spec for this very interpreter, first on ``JUPYTER_PATH``."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path / "jupyter"
    write_kernel_spec(root / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    return root


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def test_notebook_runs_top_to_bottom(notebook, kernel_path, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.from_dict(notebook)  # a copy: the module's clean notebook stays clean
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails

    cells = _code_cells(nb)
    assert all(o.output_type != "error" for c in cells for o in c.outputs)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    printed = "".join(_text(c) for c in cells)

    # The metrics table is printed with every metric per stage, model and baseline.
    table = next(_text(c) for c in cells if "metrics = pd.DataFrame" in c.source)
    for name in ("roc_auc", "pr_auc", "ece", "lift_at_10", "mql model", "sql baseline"):
        assert name in table

    # Figures: reliability, score histogram, gains, trade-off, importance, SHAP summary.
    images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6

    # The precision-vs-capacity menu lists the policies it was given.
    assert "weekly:25" in printed and "precision:0.5" in printed

    # Three leads, one per category, each explained by at least one reason.
    explained = next(_text(c) for c in cells if "model.score_one(lead)" in c.source)
    blocks = [b for b in explained.strip().split("\n\n") if b.strip()]
    assert len(blocks) == 3
    categories = []
    for block in blocks:
        lines = block.splitlines()
        match = LEAD_LINE.match(lines[0])
        assert match, lines[0]
        categories.append(match.group(2))
        reasons = [line for line in lines[1:] if line.startswith(("  + ", "  - "))]
        assert reasons, block
        assert all(len(line) > 6 for line in reasons)
    assert categories == ["sql", "mql", "nurture"]

    # The sample data went to a temporary folder, which the last cell removes again.
    written = re.search(r"written to (\S+)", printed)
    assert written is not None
    folder = Path(written.group(1))
    assert not folder.is_relative_to(NOTEBOOK.parents[1])
    assert not folder.exists()
    assert list(work.iterdir()) == []
