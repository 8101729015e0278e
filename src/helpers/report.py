"""The results page: `artifacts/report.html`, one self-contained HTML file (inline CSS, images as
base64, no external requests) for people who do not open notebooks.

Written from a run's files only: `comparison.csv` and `lora_gains.csv` of 06_evaluate (the table
with intervals, the LoRA gains), its PNG plots, and the step-5 prediction files (invented-drug and
grounding figures, a few highlighted error examples per system). A tiny inline script counts the
images the browser could decode (`<body data-images-ok=N data-images-total=M>`), so a headless
browser can check the page (tests/test_report.py).

    python -m helpers.report --run cpu [--out artifacts/report.html]
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import paths
from .io import write_text

EXAMPLES_PER_SYSTEM = 3
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#f3f3f3;white-space:normal}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.example{border:1px solid #ccc;border-radius:4px;padding:.5em .8em;margin:.6em 0;font-size:.9em}
.missed{color:#b00}.extra{color:#c60}.partial{color:#886f00}.meta{color:#666;font-size:.85em}
mark{padding:0 2px;border-radius:2px}
"""
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-ok', String(ok));
  var el = document.getElementById('render-check');
  if (el) { el.textContent = 'images shown: ' + ok + ' of ' + imgs.length; }
});
"""


def report_path() -> Path:
    """Where run_all.sh's results page goes."""
    return paths.artifacts_dir() / "report.html"


# ---- pieces ------------------------------------------------------------------------------------------
def img_tag(png: bytes, alt: str) -> str:
    """An <img> holding the PNG itself (base64 data URI)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def table_html(df: pd.DataFrame, digits: int = 2, css_class: str = "") -> str:
    """A DataFrame as a plain HTML table (numbers rounded, NaN as a dash, text escaped)."""
    return df.to_html(index=False, classes=css_class or None, border=0, escape=True, na_rep="–",
                      float_format=lambda v: f"{v:.{digits}f}")


def rates_figure(comparison: pd.DataFrame) -> bytes:
    """PNG: invented-drug rate and grounding rate per system, grouped by split."""
    import numpy as np
    from matplotlib.figure import Figure

    splits = list(comparison["split"].drop_duplicates())
    systems = list(comparison["system"].drop_duplicates())
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(splits))
    for ax, (col, title) in zip(axes, (("invented_drug_rate", "invented drug (lower is better)"),
                                       ("grounding_rate", "predicted strings found in the report"))):
        for k, system in enumerate(systems):
            sub = comparison[comparison["system"] == system].set_index("split").reindex(splits)
            ax.bar(x + (k - (len(systems) - 1) / 2) * width, sub[col].to_numpy(dtype=float), width, label=system)
        ax.set_xticks(x, splits)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def example_html(rec: dict[str, Any], row: dict[str, Any]) -> str:
    """One report with its predicted spans highlighted and what was missed / added / partly right."""
    from .grounding import highlight_html

    grounding = [g for g in rec.get("grounding") or [] if g.get("start") is not None]
    text = highlight_html(rec["text"], grounding) if grounding else html.escape(rec["text"]).replace("\n", "<br>")
    parts = [f"<div class='example'><div class='meta'><b>{html.escape(str(rec['id']))}</b> · F1 "
             f"{row['f1']:.2f} · parse: {html.escape(str(rec.get('parse_status', rec.get('parse_ok'))))}</div>",
             f"<p>{text}</p>"]
    for kind in ("missed", "extra", "partial"):
        if row.get(kind):
            parts.append(f"<div class='{kind}'><b>{kind}</b>: {html.escape(row[kind])}</div>")
    parts.append(f"<div class='meta'>gold {html.escape(json.dumps(rec.get('gold'), ensure_ascii=False))}"
                 f"<br>predicted {html.escape(json.dumps(rec.get('parsed'), ensure_ascii=False))}</div></div>")
    return "".join(parts)


def examples_section(run: str, k: int = EXAMPLES_PER_SYSTEM) -> str:
    """Per system (its first split), the k reports with the lowest F1, highlighted."""
    from . import breakdowns, metrics, scoring

    out, done = [], set()
    for (split, system), path in scoring.prediction_files(run).items():
        if system in done:
            continue
        done.add(system)
        preds = metrics.load_predictions(path)
        by_id = {r["id"]: r for r in preds}
        worst = breakdowns.worst_reports(preds, k)
        worst = worst[worst["f1"] < 1.0]
        out.append(f"<h3>{html.escape(system)} <span class='meta'>({html.escape(split)}, "
                   f"{len(worst)} of its lowest-F1 reports)</span></h3>")
        if worst.empty:
            out.append("<p>No errors on this split.</p>")
        out.extend(example_html(by_id[r["id"]], r) for r in worst.to_dict("records") if r["id"] in by_id)
    return "".join(out)


# ---- the page ------------------------------------------------------------------------------------------
def comparison_section(comparison: pd.DataFrame, gains: pd.DataFrame | None) -> str:
    """The headline table per split (F1 with 95% intervals), then LoRA - base."""
    from .tables import gains_table, headline

    table = headline(comparison)
    out = []
    for split in table["split"].drop_duplicates():
        out.append(f"<h3>split <code>{html.escape(str(split))}</code></h3>")
        out.append(table_html(table[table["split"] == split].drop(columns="split"), css_class="comparison"))
    if gains is not None and len(gains):
        out.append("<h3>LoRA − base (F1 difference, paired 95% bootstrap interval)</h3>")
        out.append(table_html(gains_table(gains), css_class="gains"))
    return "".join(out)


def plot_files(run: str) -> list[Path]:
    """The PNG plots 06_evaluate wrote for the run (F1 with intervals first)."""
    pngs = sorted(paths.metrics_dir(run).glob("*.png"))
    return sorted(pngs, key=lambda p: (not p.name.startswith("f1_ci"), not p.name.startswith("error"), p.name))


def build_html(run: str) -> str:
    """The whole page for a run, from its metrics and prediction files."""
    folder = paths.metrics_dir(run)
    csv = folder / "comparison.csv"
    if not csv.exists():
        raise FileNotFoundError(f"{paths.rel(csv)} not found: run 06_evaluate for run {run!r} first")
    comparison = pd.read_csv(csv)
    if "unsnapped" in comparison:
        comparison = comparison[~comparison["unsnapped"].astype(bool)]
    gains_csv = folder / "lora_gains.csv"
    gains = pd.read_csv(gains_csv) if gains_csv.exists() else None
    rates = comparison[["split", "system", "n", "invented_drug_rate", "grounding_rate", "parse_fail_rate"]].rename(
        columns={"invented_drug_rate": "invented drug", "grounding_rate": "grounded", "parse_fail_rate": "parse fail"})
    body = [f"<h1>Drugs and adverse events extracted by fine-tuned LLMs — run <code>{html.escape(run)}</code></h1>",
            f"<p class='meta'>Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
            f"{html.escape(paths.rel(folder))}/ and {html.escape(paths.rel(paths.predictions_dir(run)))}/. "
            f"<span id='render-check'></span></p>",
            "<h2>Comparison of systems</h2>",
            "<p>set-exact P/R/F1 (the earlier 2023 study's metric): per report the set of drug and adverse-event strings, exact match, micro-averaged. "
            "Per-field F1 with 95% bootstrap intervals over reports (norm. = case/space/punctuation-insensitive, "
            "relaxed = token overlap).</p>",
            comparison_section(comparison, gains),
            "<h2>Invented drugs and grounding</h2>",
            "<p>invented drug: among reports that name no drug, the share where a drug was output. "
            "grounded: the share of predicted strings found in the report.</p>",
            table_html(rates, css_class="rates"), figure(rates_figure(comparison), "invented-drug and grounding rates"),
            "<h2>Plots</h2>"]
    body += [figure(p.read_bytes(), p.stem.replace("_", " ")) for p in plot_files(run)]
    body += ["<h2>Error examples</h2>",
             "<p>Drugs in orange, adverse events in blue, as the system's strings were found in the report.</p>",
             examples_section(run)]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Results of run {html.escape(run)}</title><style>{CSS}</style>"
            f"<script>{CHECK_SCRIPT}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run: str, out: Path | str | None = None) -> Path:
    """Write the results page of a run (atomically) and return its path."""
    return write_text(Path(out) if out else report_path(), build_html(run))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run name (e.g. cpu, smoke)")
    ap.add_argument("--out", help="output file (default: artifacts/report.html)")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.run, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"results page: {paths.rel(path)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
