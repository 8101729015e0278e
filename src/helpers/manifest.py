"""Manifests: which inputs and parameters made an artifact, and whether it is still up to date."""
from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from . import paths
from .io import read_json, sha256_file, write_json

MANIFEST = "manifest.json"
_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "unsloth",
             "bitsandbytes", "papermill", "pandas")


def versions() -> dict[str, str]:
    """Versions of Python, the key packages and the study's git commit."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=paths.root(), capture_output=True,
            text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


def _hashes(files: Iterable[Path | str]) -> dict[str, str]:
    return {paths.rel(Path(f)): sha256_file(f) for f in sorted(map(str, files))}


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON would store them (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def write_manifest(out_dir: Path | str, step: str, params: dict[str, Any],
                   inputs: Iterable[Path | str], outputs: Iterable[Path | str],
                   started: float | None = None, name: str = MANIFEST,
                   extra: dict[str, Any] | None = None) -> Path:
    """Record step, parameters, seed, input and output hashes, versions and time beside the outputs."""
    now = time.time()
    manifest = {
        "step": step,
        "params": _normalize(params),
        "seed": params.get("seed"),
        "inputs": _hashes(inputs),
        "outputs": _hashes(outputs),
        "versions": versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "duration_s": round(now - started, 2) if started else None,
    }
    if extra:
        manifest["extra"] = extra
    return write_json(Path(out_dir) / name, manifest)


def read_manifest(out_dir: Path | str, name: str = MANIFEST) -> dict[str, Any] | None:
    path = Path(out_dir) / name
    return read_json(path) if path.exists() else None


def stale_reason(out_dir: Path | str, params: dict[str, Any] | None = None,
                 name: str = MANIFEST) -> str | None:
    """Why the step's outputs are not up to date (None when they are): missing, changed or new inputs/params."""
    manifest = read_manifest(out_dir, name)
    if manifest is None:
        return "no manifest (never finished)"
    if params is not None:
        wanted = _normalize(params)
        changed = sorted(k for k in wanted if wanted[k] != manifest["params"].get(k))
        if changed:
            return f"parameters changed: {', '.join(changed)}"
    for kind in ("inputs", "outputs"):
        for rel_path, digest in manifest[kind].items():
            path = paths.root() / rel_path
            if not path.exists():
                return f"{kind[:-1]} missing: {rel_path}"
            if sha256_file(path) != digest:
                return f"{kind[:-1]} changed: {rel_path}"
    return None
