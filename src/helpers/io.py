"""Atomic writes and JSON-lines reading with errors that name the file and line."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

TMP_SUFFIX = ".tmp"
STALE_TMP_AGE_S = 6 * 3600.0
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAK = re.compile("\r\n|\r|\n")  # what text-mode files split on (JSON strings hold none raw)
# what this process read (content hash at first read) and wrote: a step's manifest records an input
# as it was when the step read it, so an edit while the step runs leaves the step stale
_READS: dict[str, str] = {}
_WRITES: set[str] = set()


def _key(path: Path | str) -> str:
    """One spelling per file for the read/write books."""
    return str(Path(path).resolve())


def hash_when_read(path: Path | str) -> str | None:
    """The content hash a file had when this process first read it through helpers.io, else None."""
    return _READS.get(_key(path))


def written_here(path: Path | str) -> bool:
    """Whether this process wrote the file (through helpers.io)."""
    return _key(path) in _WRITES


def _note_write(path: Path) -> None:
    key = _key(path)
    _READS.pop(key, None)
    _WRITES.add(key)


class DataError(ValueError):
    """Bad input: the message names the file, the record and what is wrong."""


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual permissions
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
        _note_write(path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces the folder `path` as one unit only if
    the block succeeds (the old folder is kept until the new one is in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    old = path.parent / f".{path.name}.{tmp.name.rsplit('.', 2)[-2]}.old{TMP_SUFFIX}"
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
        for written in path.rglob("*"):   # its files are this process's now, not the ones it read before
            if written.is_file():
                _note_write(written)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


PUBLISH_MARKER = "PUBLISH.json"


def publish_files(staging: Path | str, out_dir: Path | str, names: Iterable[str]) -> list[Path]:
    """Move finished files from a staging folder (beside them in `out_dir`) into `out_dir` as one
    unit: a marker written first commits the set, so an interrupted move is rolled forward by
    `finish_publish` (the next publish, a reader or the start-up sweep) and old and new never mix."""
    names = list(names)
    write_json(Path(staging) / PUBLISH_MARKER, {"files": names})
    return finish_publish(out_dir, staging)


def finish_publish(out_dir: Path | str, staging: Path | str | None = None) -> list[Path]:
    """Complete every committed publish in `out_dir` (idempotent); returns the published files."""
    out_dir = Path(out_dir)
    folders = [Path(staging)] if staging else sorted(out_dir.glob(f".*{TMP_SUFFIX}"))
    published = []
    for st in folders:
        marker = st / PUBLISH_MARKER
        if not (st.is_dir() and marker.is_file()):
            continue
        for name in json.loads(marker.read_text(encoding="utf-8"))["files"]:
            if (st / name).exists():
                os.replace(st / name, out_dir / name)
                _note_write(out_dir / name)
            published.append(out_dir / name)
        shutil.rmtree(st, ignore_errors=True)
    return published


def _umask() -> int:
    """The process umask (read without changing it), for the permissions of a published temp."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def sweep_stale_tmp(folders: Iterable[Path | str], older_than_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove temp files and folders that interrupted atomic writes left behind (`.NAME.*.tmp`,
    untouched for `older_than_s`); a write in progress is younger, so it is left alone."""
    removed, cutoff = [], time.time() - older_than_s
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob(f".*{TMP_SUFFIX}")):
            try:
                if p.lstat().st_mtime > cutoff or not p.exists():
                    continue
                if p.is_dir() and (p / PUBLISH_MARKER).is_file():
                    finish_publish(p.parent, p)  # committed: roll it forward, never drop it
                    continue
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    return removed


def write_text(path: Path | str, text: str) -> Path:
    """Write text atomically, so a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(scrub_surrogates(text), encoding="utf-8")
    return Path(path)


def write_text_if_changed(path: Path | str, text: str) -> bool:
    """Write text atomically unless the file already holds exactly it (keeps its mtime); True if
    written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return False
    write_text(path, text)
    return True


def save_figure(fig: Any, path: Path | str, dpi: int = 110, **kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG atomically (never a half-written image)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **kwargs)
    return Path(path)


def scrub_surrogates(text: str) -> str:
    """Replace lone UTF-16 surrogates (from a JSON escape like "\\ud83d") by U+FFFD, so the
    text can be written as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def write_json(path: Path | str, obj: Any) -> Path:
    """Write pretty, key-sorted JSON atomically (stable bytes for equal content)."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(path: Path | str, records: Iterable[dict]) -> Path:
    """Write one JSON object per line atomically."""
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records]
    return write_text(path, "".join(line + "\n" for line in lines))


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_text(data: bytes, where: str) -> str:
    """Bytes of a text file as str: UTF-8 (a byte-order mark is dropped; UTF-16 with a BOM is
    read too); compressed, binary or other-encoded data raises DataError naming file and line."""
    if data[:2] == b"\x1f\x8b":
        raise DataError(f"{where}:1: gzip-compressed data; decompress it first (gunzip)")
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{where}:1: a zip archive; extract it first")
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)  # both codecs drop the byte-order mark
            except UnicodeDecodeError as e:
                raise DataError(f"{where}:1: not valid {codec.upper()} after its byte-order mark "
                                f"(byte {e.start})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{where}:{line}: binary data (a NUL byte); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{where}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}; latin-1 or "
                        "cp1252?); save the file as UTF-8") from None


def read_text_file(path: Path | str) -> str:
    """A text file decoded by `decode_text` (line endings kept as they are, so offsets stay right)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a file")
    data = path.read_bytes()
    _READS.setdefault(_key(path), hashlib.sha256(data).hexdigest())
    return decode_text(data, str(path))


def loads_at(text: str, where: str, with_line: bool = False) -> Any:
    """json.loads whose errors (syntax, nesting too deep) raise DataError naming `where` (and the
    line, for a whole file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"at line {e.lineno} column {e.colno}: {e.msg}" if with_line else f"({e.msg} at column {e.colno})"
        raise DataError(f"{where}: invalid JSON {at}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None


def read_json(path: Path | str) -> Any:
    """Read a JSON file; a syntax error names the file and position."""
    return loads_at(read_text_file(Path(path)), str(path), with_line=True)


def read_jsonl_numbered(path: Path | str) -> list[tuple[int, dict]]:
    """JSON lines with their file line numbers (blank lines skipped); a bad line raises DataError
    naming the file and line number."""
    path = Path(path)
    out = []
    for n, line in enumerate(_LINE_BREAK.split(read_text_file(path)), 1):
        if not line.strip():
            continue
        obj = loads_at(line, f"{path}:{n}")
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    return out


def read_jsonl(path: Path | str) -> list[dict]:
    """Read JSON lines; a bad line raises DataError naming the file and line number."""
    return [obj for _, obj in read_jsonl_numbered(path)]


def read_json_list_numbered(path: Path | str) -> list[tuple[int, Any]]:
    """The items of a file holding one JSON list, each with the file line it starts on."""
    path = Path(path)
    text = read_text_file(path)
    data = read_json(path) if text.strip() else None  # syntax and nesting errors, named
    if not isinstance(data, list):
        what = "an empty file" if data is None else f"a JSON {type(data).__name__}"
        raise DataError(f"{path}:1: expected a JSON list of records, got {what}")
    dec, pos, out = json.JSONDecoder(), text.index("[") + 1, []
    for item in data:
        while text[pos] in " \t\r\n,":
            pos += 1
        out.append((text.count("\n", 0, pos) + 1, item))
        pos = dec.raw_decode(text, pos)[1]
    return out


def sha256_file(path: Path | str) -> str:
    """Content hash of a file, for manifests and caches."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
