"""notebooks/explore.ipynb runs top to bottom in a fresh kernel of this venv.

The kernel is a kernelspec written to a temporary JUPYTER_PATH that starts
``sys.executable -m ipykernel_launcher`` (the interpreter running the tests),
so nothing needs `ipykernel install` and no user-level kernel named
``python3`` that points at another Python can be picked up instead.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from pcapreset.interpret.rules import CAUSES

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
KERNEL = "pcapreset-test-venv"


def _outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [
        o["data"][mime]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if mime in o.get("data", {})
    ]


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    jupyter = tmp_path / "jupyter"
    write_kernel_spec(jupyter / "kernels" / KERNEL, overrides={"display_name": KERNEL})
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return KERNEL


def test_the_checked_in_notebook_is_executed() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert len(_outputs(nb, "image/png")) == 4


def _streams(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )


def test_notebook_executes_without_errors(venv_kernel: str) -> None:
    if not (NOTEBOOK.parents[1] / "sample_pcaps" / "keepalive_race_node").is_dir():
        pytest.skip("keepalive_race_node sample capture not present")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:  # start from nothing: outputs must come from this run
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    client = NotebookClient(
        nb,
        kernel_name=venv_kernel,
        timeout=300,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors
    # the plots rendered inline (the three, and two captures side by side on
    # given Axes), the tables came out, every cause is listed
    assert len(_outputs(nb, "image/png")) == 4
    assert "with 2 Axes" in "\n".join(_outputs(nb, "text/plain"))
    text = "\n".join(_outputs(nb, "text/plain"))
    assert "<Analysis backend.pcap:" in text and "<Analysis nginx.pcap:" in text
    html = "\n".join(_outputs(nb, "text/html"))
    assert "<b>pcapreset</b> backend.pcap" in html  # Analysis._repr_html_
    # both captures' flows joined on community_id; their exports read back as one table
    assert "conn_state_nginx" in text and "reset_cause_nginx" in text
    assert "{'connections': 14, 'resets': 10, 'findings': 0}" in _streams(nb)
    value_counts = next(t for t in _outputs(nb, "text/plain") if t.startswith("cause\n"))
    assert all(cause in value_counts for cause in CAUSES)
    counts = dict(ln.split() for ln in value_counts.splitlines()[1:] if ln.split()[0] in CAUSES)
    assert int(counts["keepalive_race"]) > 0 and int(counts["backend_crash"]) == 0
    assert len(_outputs(nb, "text/html")) >= 3  # connections, resets, packets tables
