"""The committed notebooks: a parameters cell naming the profile, conventions, clean outputs."""
from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

from helpers import config, paths, steps

NOTEBOOKS = [(s.name, s.notebook) for s in steps.STEPS.values()]


def _parameters(nb) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


@pytest.mark.parametrize("step,name", NOTEBOOKS)
def test_parameters_cell_names_only_profile_model_and_overrides(step, name):
    """Every setting comes from the profile: the parameters cell names it (smoke by default), the
    model of a per-model step, and an empty overrides dict; the next cell resolves the settings."""
    nb = nbformat.read(paths.root() / "notebooks" / name, as_version=4)
    defaults = _parameters(nb)
    prof = config.load_profile("smoke")
    expected = {"profile": "smoke", "overrides": {}}
    if steps.get(step).per_model:
        expected["model"] = prof["models"][0]
    assert defaults == expected, f"{name}: the parameters cell holds {defaults}, not {expected}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'config.step_settings(profile, "{step}"' in code, f"{name}: settings not read from the profile"


@pytest.mark.parametrize("step,name", NOTEBOOKS)
def test_notebook_conventions_and_clean_outputs(step, name):
    path = paths.root() / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    raw = path.read_text(encoding="utf-8")
    assert len(raw) < 1_500_000, f"{name} is {len(raw) // 1000} kB: strip bulky outputs"
    assert not re.search(r'"/(root|tmp|work|home)/', raw), f"{name} holds an absolute path"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "write_manifest" in code, f"{name} must write its step manifest"
    assert "from helpers" in code or "import helpers" in code
    json.loads(raw)


def _committed_notebooks() -> list:
    return sorted((paths.root() / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: p.name)
def test_committed_notebook_has_no_injected_parameters(path):
    nb = nbformat.read(path, as_version=4)
    injected = [i for i, c in enumerate(nb.cells)
                if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert not injected, (f"{path.name}: cell {injected[0]} is papermill's injected-parameters cell; "
                          "re-execute the notebook with its own defaults before committing it")


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: p.name)
def test_committed_notebook_execution_counts_are_in_order(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.execution_count]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), \
        f"{path.name}: execution counts {counts} are out of order (cells were run by hand?)"


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: p.name)
def test_notebook_defines_no_function(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        defs = [n.name for n in ast.walk(ast.parse(source))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name} cell {i} defines {defs}: move it into src/helpers"
