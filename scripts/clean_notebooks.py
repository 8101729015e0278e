"""Strip run-specific metadata (timestamps, durations, papermill bookkeeping) from the committed
notebooks, so a re-execution only shows up in git where an output really changed.
Usage: python scripts/clean_notebooks.py [notebooks/*.ipynb]"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def clean(path: Path) -> bool:
    """Drop execution/papermill metadata in place; True when the file changed."""
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


if __name__ == "__main__":
    files = [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for f in files:
        print(f"{'cleaned' if clean(f) else 'clean  '} {f.name}")
