"""The test reports steps 4b and 5 score: the run's synthetic test splits, the hand-written set
(splits `handwritten`, `handwritten_blind`) or a user's file, read with the project's report reader (`schemas.load_reports`)
and optionally sampled (seeded), so both steps score exactly the same reports."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from . import paths
from .schemas import load_reports


def test_file_split(test_file: str | Path | None) -> str | None:
    """The split name of a user's test file: its stem (`my_reports.jsonl` -> `my_reports`); None
    without one. Also the tag of the manifests and executed notebooks of a run on that file."""
    return Path(test_file).stem if test_file else None


def resolve(test_file: str | Path) -> Path:
    """A user's test file; a relative path is read from the repository root."""
    path = Path(test_file)
    return path if path.is_absolute() else paths.root() / path


def split_path(run: str, split: str) -> Path:
    """The file of a split, with one clear line when it is not there."""
    path = paths.split_file(run, split)
    if path.exists():
        return path
    if split in paths.HANDWRITTEN_FILES:
        raise FileNotFoundError(f"the profile asks for split {split!r} but {paths.rel(path)} is "
                                f"missing (the hand-written set ships in data/; restore it, or drop "
                                f"{split!r} from the profile's `splits`)")
    raise FileNotFoundError(f"test reports not found: {paths.rel(path)} (run 02_synthesize for run "
                            f"{run!r}, or pass test_file)")


def sample(reports: list[dict[str, Any]], limit: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of `limit` reports in file order (all of them when limit is 0 or larger)."""
    if not limit or limit >= len(reports):
        return reports
    keep = set(random.Random(seed).sample(range(len(reports)), limit))
    return [r for i, r in enumerate(reports) if i in keep]


def load_test_sets(run: str, splits: Sequence[str], test_file: str | Path | None = None,
                   limit: int = 0, seed: int = 13) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    """{split: (file, reports)} for the profile's splits, or only the user's file when one is
    given (its stem is the split name); every file must exist, none is skipped silently."""
    if isinstance(splits, str):
        raise TypeError(f"splits must be a list of split names, got the string {splits!r}")
    if test_file:
        named = {test_file_split(test_file): resolve(test_file)}
        missing = [p for p in named.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"test_file not found: {paths.rel(missing[0])}")
    else:
        named = {s: split_path(run, s) for s in splits}
    return {name: (path, sample(load_reports(path), limit, seed)) for name, path in named.items()}
