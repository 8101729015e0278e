"""Re-execute the committed notebooks in place on their own defaults (the smoke profile), in step
order, then strip run metadata: what a commit of changed notebooks should carry.
No parameters are injected, so the committed notebooks never hide a branch behind papermill's
injected-parameters cell. Usage: python scripts/refresh_notebooks.py [notebooks/0N_*.ipynb ...]"""
from __future__ import annotations

import sys
from pathlib import Path

import papermill as pm

from clean_notebooks import clean

ROOT = Path(__file__).resolve().parents[1]


def refresh(path: Path) -> None:
    """Execute one notebook in place with its parameters cell as written."""
    print(f"executing {path.name}", flush=True)
    pm.execute_notebook(str(path), str(path), cwd=str(path.parent), progress_bar=False)
    clean(path)


if __name__ == "__main__":
    files = [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("0[1-9]*.ipynb"))
    for f in files:
        refresh(f)
