"""Manifests: which inputs and parameters made an artifact, and whether it is still up to date."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from . import paths
from .io import DataError, hash_when_read, read_json, sha256_file, write_json, written_here

_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "unsloth",
             "bitsandbytes", "papermill", "pandas")


def package_versions() -> dict[str, str]:
    """Versions of Python and the key packages (what can change an artifact besides the code)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def versions() -> dict[str, str]:
    """Versions of Python, the key packages and the study's git commit."""
    out = package_versions()
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
        for data_file in _data_files(source):
            out[f"helpers/{data_file}"] = sha256_file(_HELPERS / data_file)
        todo |= _helper_imports(source) - seen
    return dict(sorted(out.items()))


_DATA_FILE = re.compile(r"""["']([\w.-]+\.(?:txt|json|jsonl|yaml|yml|j2|jinja|md|csv))["']""")


def _data_files(source: str) -> set[str]:
    """Files beside the helper modules that a module names (the teacher prompt, word lists): they
    shape outputs like code does."""
    return {m for m in _DATA_FILE.findall(source) if (_HELPERS / m).is_file()}


CHANGED_DURING_RUN = "changed while the step ran"


def _hashes(files: Iterable[Path | str], started: float | None = None) -> dict[str, str]:
    """Content hash per file as the step read it: the hash taken when helpers.io first read it
    (before the step used it), else the hash now; a file some other process modified after
    `started` is recorded as changed while the step ran. Either way an edit during the run leaves
    the step stale."""
    out = {}
    for f in sorted(map(str, files)):
        digest = hash_when_read(f)
        if digest is None:
            digest = CHANGED_DURING_RUN if _touched_since(Path(f), started) else sha256_file(f)
        out[paths.rel(Path(f))] = digest
    return out


def _touched_since(path: Path, started: float | None) -> bool:
    """Modified by another process after `started` (a future mtime, from a skewed clock, does not
    count: it must not make a step stale forever)."""
    if started is None or written_here(path):
        return False
    mtime = path.stat().st_mtime
    return started < mtime <= time.time() + 1


def _listing(folder: Path, suffixes: set[str], exclude: set[str]) -> list[str]:
    """Names of the files a glob over `folder` would see (manifests, temp files and the step's own
    outputs left out)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.suffix in suffixes and not p.name.startswith(".")
                  and not p.name.startswith("manifest") and paths.rel(p) not in exclude)


def _folders(inputs: list[Path], outputs: Iterable[Path | str],
             started: float | None) -> dict[str, Any]:
    """Input folders the step read whole (its inputs there are every file of their kind, as a glob
    gives): their file lists, so a file added or removed there later makes the step stale."""
    exclude = {paths.rel(Path(o)) for o in outputs}
    by_folder: dict[Path, set[str]] = {}
    for f in inputs:
        by_folder.setdefault(f.resolve().parent, set()).add(f.name)
    out: dict[str, Any] = {}
    for folder, names in sorted(by_folder.items()):
        suffixes = {Path(n).suffix for n in names}
        listing = _listing(folder, suffixes, exclude)
        if listing != sorted(names):
            continue
        changed = any(_touched_since(folder / n, started) for n in listing)
        out[paths.rel(folder)] = {"suffixes": sorted(suffixes), "exclude": sorted(exclude),
                                  "files": [CHANGED_DURING_RUN] if changed else listing}
    return out


def _param_files(params: dict[str, Any]) -> dict[str, str]:
    """Files named by parameters (a test file, a teacher prompt file): their content counts too."""
    out = {}
    for value in params.values():
        if isinstance(value, str) and value and len(value) < 4096:
            p = Path(value) if Path(value).is_absolute() else paths.root() / value
            try:
                if p.is_file():
                    out[paths.rel(p)] = sha256_file(p)
            except OSError:
                continue
    return dict(sorted(out.items()))


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON would store them (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def write_manifest(path: Path | str, step: str, params: dict[str, Any],
                   inputs: Iterable[Path | str], outputs: Iterable[Path | str],
                   started: float | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Record step, parameters, seed, input and output hashes, versions and time at `path` (the
    step's manifest, paths.step_manifest), beside the outputs."""
    now = time.time()
    inputs, outputs = [Path(f) for f in inputs], [Path(f) for f in outputs]
    manifest = {
        "step": step,
        "params": _normalize(params),
        "seed": params.get("seed"),
        "inputs": _hashes(inputs, started),
        "folders": _folders(inputs, outputs, started),
        "param_files": _param_files(params),
        "outputs": _hashes(outputs),
        "code": code_fingerprint(step),
        "versions": versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "duration_s": round(now - started, 2) if started else None,
    }
    if extra:
        manifest["extra"] = extra
    return write_json(Path(path), manifest)


def read_manifest(path: Path | str) -> dict[str, Any] | None:
    """The manifest at `path`, or None when there is none."""
    path = Path(path)
    return read_json(path) if path.exists() else None


_REQUIRED = {"step": str, "params": dict, "inputs": dict, "outputs": dict}


def _damage(manifest: Any) -> str | None:
    """What is wrong with a manifest's shape (None when it has every key with the right type)."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} missing or not a {kind.__name__}"
    for key in ("code", "folders", "param_files", "versions"):
        if key in manifest and not isinstance(manifest[key], dict):
            return f"{key!r} is not an object"
    for key in ("inputs", "outputs", "param_files"):
        if not all(isinstance(v, str) for v in manifest.get(key, {}).values()):
            return f"{key!r} holds a hash that is not a string"
    return None


def stale_reason(path: Path | str, params: dict[str, Any] | None = None) -> str | None:
    """Why the step's outputs are not up to date (None when they are): a missing or damaged
    manifest, changed parameters or parameter files, missing or changed inputs/outputs, a file
    added to or removed from a folder the step read whole, changed code or package versions."""
    try:
        manifest = read_manifest(path)
    except (DataError, OSError) as e:
        return f"manifest unreadable, rerun ({' '.join(str(e).split())[:200]})"
    if manifest is None:
        return "no manifest (never finished)"
    damage = _damage(manifest)
    if damage:
        return f"manifest damaged, rerun ({damage})"
    try:
        return _stale(manifest, params)
    except (KeyError, TypeError, AttributeError, ValueError, OSError) as e:
        return f"manifest damaged, rerun ({type(e).__name__}: {e})"


def _stale(manifest: dict[str, Any], params: dict[str, Any] | None) -> str | None:
    """stale_reason's checks, on a manifest of the right shape."""
    if params is not None:
        wanted = _normalize(params)
        changed = sorted(k for k in wanted if wanted[k] != manifest["params"].get(k))
        if changed:
            return f"parameters changed: {', '.join(changed)}"
    for rel_path, digest in manifest.get("param_files", {}).items():
        path = paths.root() / rel_path
        if not path.is_file() or sha256_file(path) != digest:
            return f"file named by a parameter changed: {rel_path}"
    for kind in ("inputs", "outputs"):
        for rel_path, digest in manifest[kind].items():
            path = paths.root() / rel_path
            if digest == CHANGED_DURING_RUN:
                return f"{kind[:-1]} changed while the step ran: {rel_path}"
            if not path.exists():
                return f"{kind[:-1]} missing: {rel_path}"
            if sha256_file(path) != digest:
                return f"{kind[:-1]} changed: {rel_path}"
    reason = _folder_change(manifest.get("folders", {}))
    if reason:
        return reason
    if "code" not in manifest:
        return "made before code fingerprints were recorded"
    now = code_fingerprint(manifest["step"])
    for key in sorted(set(now) | set(manifest["code"])):
        if now.get(key) != manifest["code"].get(key):
            return f"code changed: {key}"
    return _version_change(manifest.get("versions", {}))


def _folder_change(folders: dict[str, Any]) -> str | None:
    """A file added to or removed from a folder the step read whole."""
    for rel_folder, entry in folders.items():
        folder = paths.root() / rel_folder
        if entry["files"] == [CHANGED_DURING_RUN]:
            return f"files changed in {rel_folder}/ while the step ran"
        now = _listing(folder, set(entry["suffixes"]), set(entry["exclude"])) if folder.is_dir() else []
        added, removed = sorted(set(now) - set(entry["files"])), sorted(set(entry["files"]) - set(now))
        if added or removed:
            what = f"new file {added[0]}" if added else f"file removed: {removed[0]}"
            return f"{what} in {rel_folder}/"
    return None


def _version_change(recorded: dict[str, str]) -> str | None:
    """A package (or Python) version that differs from the one the step ran with."""
    now = package_versions()
    for name in sorted(set(now) | set(recorded) - {"git_commit"}):
        if now.get(name) != recorded.get(name):
            return f"package version changed: {name} {recorded.get(name)} -> {now.get(name)}"
    return None
