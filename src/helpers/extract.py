"""The extractor command: run a run's tuned model on your own reports, one prediction record each.

    python -m helpers.extract --model RUN/MODEL INPUT [-o predictions.jsonl]

INPUT is a canonical `.jsonl` (`{"id", "text", ...}`; labels optional) or 2023-study-format `.jsonl`/`.json`,
a `.txt` file (one report per line), `-` for stdin (one report per line, or JSON lines), a CADEC
folder (`text/` + `original/`), an ADE Corpus `DRUG-AE.rel` file, or a folder of `.txt` (one
report per file) and `.jsonl` files. The records are the ones `05_infer` writes (same prompts,
batching, constrained decoding, grounding and snapping: `infer.predict`); the settings default to
the run's own 05_infer manifest, else its profile. A bad record is reported on stderr as
`FILE:LINE: what is wrong; skipped` and the others go on (`--strict` stops instead).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from . import paths
from .io import DataError, read_json

SETTINGS = {"batch_size": 8, "max_new_tokens": 96, "constrained": False, "snap": True,
            "fuzzy_threshold": 85.0}


@dataclass
class Inputs:
    """Reports read from the input, and one message per record that was skipped."""
    reports: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, rec: dict[str, Any] | None, where: str, error: Exception | None = None) -> None:
        if error is not None:
            self.problems.append(f"{where}: {error}")
        elif rec is not None:
            self.reports.append(rec)


# ---- reading reports ----------------------------------------------------------------------------
def as_report(obj: Any, default_id: str, where: str) -> dict[str, Any]:
    """A canonical report from a JSON object (canonical or 2023-study format); labels are optional."""
    from .schemas import from_2023_study, validate_report

    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    if "text" not in obj and "input" in obj:
        return from_2023_study(obj, 0, where) | {"id": str(obj.get("id", default_id))}
    rec = dict(obj)
    rec.setdefault("id", default_id)
    rec["id"] = str(rec["id"])
    for key in ("drugs", "adverse_events"):
        rec.setdefault(key, [])
    try:
        return validate_report(rec, where)
    except DataError as e:
        raise DataError(str(e).removeprefix(f"{where}: ")) from None


def read_lines(lines: Iterable[str], name: str, stem: str, out: Inputs) -> None:
    """JSON-lines or plain-text lines: a line starting with `{` or `[` is JSON (a record), any other
    line is the text of one report."""
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        where, default_id = f"{name}:{n}", f"{stem}-{n}"
        if not text.startswith(("{", "[")):
            out.add({"id": default_id, "text": text, "drugs": [], "adverse_events": []}, where)
            continue
        try:
            out.add(as_report(json.loads(text), default_id, where), where)
        except json.JSONDecodeError as e:
            out.add(None, where, DataError(f"invalid JSON ({e.msg} at column {e.colno})"))
        except DataError as e:
            out.add(None, where, e)


def read_json_list(path: Path, out: Inputs) -> None:
    """A 2023-study-format (or canonical) JSON list, one report per item."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        try:
            out.add(as_report(item, f"{path.stem}-{i + 1}", where), where)
        except DataError as e:
            out.add(None, where, e)


def read_cadec(folder: Path, out: Inputs) -> None:
    """A CADEC folder, one post per report; a post whose annotations are broken is skipped."""
    from .corpora import load_cadec_document

    texts = sorted((folder / "text").glob("*.txt"))
    if not texts:
        raise DataError(f"{folder / 'text'}: no .txt posts")
    for txt in texts:
        ann = folder / "original" / f"{txt.stem}.ann"
        try:
            if not ann.exists():
                raise DataError(f"no annotation file {paths.rel(ann)}")
            out.add(load_cadec_document(txt, ann), str(txt))
        except DataError as e:
            out.add(None, str(txt), e)


def read_ade(path: Path, out: Inputs) -> None:
    """ADE Corpus DRUG-AE.rel: malformed lines are reported and left out, the rest loaded as usual."""
    import tempfile

    from .corpora import load_ade, parse_ade_line

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    good = []
    for n, line in enumerate(lines, 1):
        try:
            if line.strip():
                parse_ade_line(line, f"{path}:{n}")
            good.append(line)
        except DataError as e:
            out.problems.append(str(e))
    if len(good) == len(lines):
        out.reports.extend(load_ade(path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / path.name
        clean.write_text("".join(good), encoding="utf-8")
        out.reports.extend(load_ade(clean))


def read_path(path: Path, out: Inputs) -> None:
    """Dispatch one file or folder to its reader."""
    if path.is_dir():
        if (path / "text").is_dir() and (path / "original").is_dir():
            return read_cadec(path, out)
        files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl", ".json", ".rel"))
        if not files:
            raise DataError(f"{path}: no .txt, .jsonl, .json or .rel files")
        for p in files:
            if p.suffix == ".txt":
                text = p.read_text(encoding="utf-8").strip()
                out.add({"id": p.stem, "text": text, "drugs": [], "adverse_events": []} if text else None,
                        str(p), None if text else DataError("empty report"))
            else:
                read_path(p, out)
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".rel":
        return read_ade(path, out)
    if path.suffix == ".json":
        return read_json_list(path, out)
    with path.open(encoding="utf-8") as fh:
        read_lines(fh, str(path), path.stem, out)


def read_inputs(source: str, stdin: TextIO | None = None) -> Inputs:
    """Every report of the input (a path or `-`), with duplicate ids reported and skipped."""
    out = Inputs()
    if source == "-":
        read_lines(stdin or sys.stdin, "<stdin>", "stdin", out)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read_path(Path(source), out)
        out.problems.extend(str(w.message) for w in caught)
    seen: set[str] = set()
    unique = []
    for rec in out.reports:
        if rec["id"] in seen:
            out.problems.append(f"{source}: report id {rec['id']!r} appears again; the repeat is skipped")
            continue
        seen.add(rec["id"])
        unique.append(rec)
    out.reports = unique
    return out


# ---- the model and the settings -----------------------------------------------------------------
def resolve_model(value: str) -> tuple[str, str]:
    """(run, model) from `RUN/MODEL` or from an adapter folder `.../models/RUN/MODEL`."""
    folder = Path(value)
    if (folder / "adapter_config.json").exists():
        return folder.resolve().parent.name, folder.resolve().name
    parts = value.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--model {value!r}: expected RUN/MODEL (e.g. cpu/smollm2-135m) or an adapter folder")
    return parts[0], parts[1]


def run_settings(run: str, model: str) -> tuple[dict[str, Any], str]:
    """The run's inference settings: its 05_infer manifest, else its profile, else the defaults."""
    from . import config

    manifest = paths.step_manifest("05_infer", run, model)
    if manifest.exists():
        params = read_json(manifest).get("params", {})
        return {k: params.get(k, v) for k, v in SETTINGS.items()}, paths.rel(manifest)
    try:
        params = config.step_settings(run, "05_infer", model)
        return {k: params.get(k, v) for k, v in SETTINGS.items()}, f"configs/{run}.yaml"
    except config.ConfigError:
        return dict(SETTINGS), "defaults"


def load(run: str, model: str, variant: str) -> tuple[Any, Any, Any, str | None]:
    """Tokenizer, model (adapter merged, as in 05_infer), spec and the adapter's repository path."""
    from . import infer, models

    spec = models.get_spec(model)
    adapter = infer.adapter_dir(run, model) if variant == "lora" else None
    tokenizer = models.set_padding_side(models.load_tokenizer(model), "generation")
    net = models.load_model(model)
    if adapter is not None:
        net = infer.apply_adapter(net, adapter, merge=True)
    return tokenizer, net, spec, paths.rel(adapter) if adapter else None


def extract(reports: list[dict[str, Any]], run: str, model: str, variant: str = "lora",
            progress: bool = True, **overrides: Any) -> tuple[list[dict[str, Any]], float]:
    """Prediction records for `reports` with the run's model, as 05_infer makes them; and seconds."""
    from . import infer

    settings, _ = run_settings(run, model)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    tokenizer, net, spec, adapter = load(run, model, variant)
    started = time.perf_counter()
    records = infer.predict(net, tokenizer, spec, reports, batch_size=int(settings["batch_size"]),
                            max_new_tokens=int(settings["max_new_tokens"]),
                            constrained=settings["constrained"], progress=progress,
                            system=infer.system_name(model, variant), adapter=adapter,
                            snap=bool(settings["snap"]), fuzzy_threshold=float(settings["fuzzy_threshold"]))
    return records, time.perf_counter() - started


# ---- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m helpers.extract", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("input", help="reports: .jsonl, .json, .txt, a folder, a CADEC folder, DRUG-AE.rel, or - (stdin)")
    ap.add_argument("--model", required=True, help="RUN/MODEL (e.g. cpu/smollm2-135m) or an adapter folder")
    ap.add_argument("-o", "--output", help="predictions .jsonl (default: stdout)")
    ap.add_argument("--variant", choices=("lora", "base"), default="lora", help="tuned (default) or base model")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--constrained", choices=("off", "schema", "spans"), help="default: the run's setting")
    ap.add_argument("--no-snap", dest="snap", action="store_false", default=None,
                    help="keep the model's own strings in `parsed`")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--strict", action="store_true", help="stop at the first bad record instead of skipping it")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.extract`: exit 0 when every readable report got a prediction."""
    from .io import write_jsonl

    args = parse_args(argv)
    try:
        run, model = resolve_model(args.model)
        inputs = read_inputs(args.input)
    except (ValueError, DataError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for problem in inputs.problems:
        print(f"error: {problem}; skipped", file=sys.stderr)
    if args.strict and inputs.problems:
        return 1
    if not inputs.reports:
        print(f"error: {args.input}: no readable reports", file=sys.stderr)
        return 1
    settings, source = run_settings(run, model)
    overrides = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "snap": args.snap,
                 "constrained": {"off": False}.get(args.constrained, args.constrained)}
    shown = settings | {k: v for k, v in overrides.items() if v is not None}
    print(f"{len(inputs.reports)} reports, {len(inputs.problems)} skipped; {run}/{model} ({args.variant}); "
          f"settings from {source}: {shown}", file=sys.stderr)
    try:
        records, seconds = extract(inputs.reports, run, model, args.variant, args.progress, **overrides)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        write_jsonl(args.output, records)
    else:
        for rec in records:
            sys.stdout.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    ok = sum(r["parse_ok"] for r in records)
    print(f"{len(records)} predictions ({ok} parsed) in {seconds:.1f} s, {len(records) / seconds:.2f} reports/s"
          f"{' -> ' + args.output if args.output else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
