"""Manifests: which inputs and parameters made an artifact, and whether it is still up to date."""
from __future__ import annotations

import ast
import hashlib
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


_HELPERS = Path(__file__).resolve().parent


def _helper_imports(source: str) -> set[str]:
    """Names of helper modules a piece of code imports (`from helpers import x`, `from .x import y`)."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if (node.level == 1 and not mod) or (node.level == 0 and mod == "helpers"):
                found |= {a.name for a in node.names}
            elif node.level == 1:
                found.add(mod.split(".")[0])
            elif node.level == 0 and mod.startswith("helpers."):
                found.add(mod.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    # manifest itself only keeps the books: a change there does not change any artifact
    return {m for m in found if m != "manifest" and (_HELPERS / f"{m}.py").exists()}


def _notebook_code(step: str) -> str | None:
    """The code cells of a step's notebook (outputs and metadata left out), None when absent."""
    path = paths.root() / "notebooks" / f"{step}.ipynb"
    if not path.exists():
        return None
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return "\n\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")


def code_fingerprint(step: str) -> dict[str, str]:
    """Hashes of the code that makes a step's outputs: its notebook's code cells and every helper
    module they import, transitively; a change there makes the step stale like a changed input."""
    out: dict[str, str] = {}
    code = _notebook_code(step)
    todo = _helper_imports(code) if code is not None else set()
    if code is not None:
        out[f"notebooks/{step}.ipynb"] = hashlib.sha256(code.encode()).hexdigest()
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        seen.add(mod)
        source = (_HELPERS / f"{mod}.py").read_text(encoding="utf-8")
        out[f"helpers/{mod}.py"] = hashlib.sha256(source.encode()).hexdigest()
        todo |= _helper_imports(source) - seen
    return dict(sorted(out.items()))


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
        "code": code_fingerprint(step),
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
    """Why the step's outputs are not up to date (None when they are): changed parameters, missing or
    changed inputs/outputs, or changed code (the step's notebook or a helper module it uses)."""
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
    if "code" not in manifest:
        return "made before code fingerprints were recorded"
    now = code_fingerprint(manifest["step"])
    for key in sorted(set(now) | set(manifest["code"])):
        if now.get(key) != manifest["code"].get(key):
            return f"code changed: {key}"
    return None
