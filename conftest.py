"""pytest set-up shared by the unit tests and the nbval notebook run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the Colab entry notebook installs packages and runs the whole study: never executed by nbval
collect_ignore = ["notebooks/00_colab.ipynb"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# notebook kernels must find the same environment as the tests
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Notebook cells are end-to-end checks: mark them slow so `-m "not slow"` skips them."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
