"""The results page: one self-contained file with the comparison table (intervals), every plot of
the run, the invented-drug and grounding figures and error examples; and (slow) a real headless
browser shows the table and decodes every image."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from helpers import infer, paths, plots, report, scoring
from helpers.io import write_jsonl, write_text

RUN = "r"
REPORTS = [
    {"id": "p1", "text": "I take Lipitor and my muscles ache.", "drugs": ["Lipitor"], "adverse_events": ["muscles ache"]},
    {"id": "p2", "text": "The new pill gives me <b>headaches</b> & nausea.", "drugs": [],
     "adverse_events": ["headaches", "nausea"]},
    {"id": "p3", "text": "Zoloft, dry mouth.", "drugs": ["Zoloft"], "adverse_events": ["dry mouth"]},
]
OUTPUTS = {  # system -> raw output per report
    "m-base": ['{"drugs": ["Lipitor"], "adverse_events": []}', '{"drugs": ["pill"], "adverse_events": ["headaches"]}',
               "no idea"],
    "m-lora": ['{"drugs": ["Lipitor"], "adverse_events": ["muscles ache"]}',
               '{"drugs": [], "adverse_events": ["headaches", "nausea"]}',
               '{"drugs": ["Zoloft"], "adverse_events": ["mouth"]}'],
}


@pytest.fixture()
def run_files(tmp_path, monkeypatch):
    """A scratch run: step-5 prediction files (made by infer.make_record) and step-6 outputs."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    for system, raws in OUTPUTS.items():
        recs = [infer.make_record(r, raw, 9, "stop", system, "m", None, False) for r, raw in zip(REPORTS, raws)]
        write_jsonl(paths.predictions_file(RUN, "test", system), recs)
    comparison = scoring.compare_systems(RUN, n_boot=50, seed=1)
    gains = scoring.lora_gains(RUN, ["m"], n_boot=50, seed=1)
    out = paths.metrics_dir(RUN)
    write_text(out / "comparison.csv", comparison.to_csv(index=False))
    write_text(out / "lora_gains.csv", gains.to_csv(index=False))
    plots.f1_with_ci(comparison[~comparison["unsnapped"]], path=out / "f1_ci.png")
    plots.error_types(scoring.collect(RUN)["error_types"], path=out / "error_types.png")
    return tmp_path


def test_the_page_holds_table_with_intervals_every_plot_and_examples(run_files):
    page = report.write_report(RUN)
    assert page == run_files / "artifacts" / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "<table" in html and re.search(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", html)   # F1 [lo, hi]
    assert "LoRA − base" in html and "invented drug" in html and "grounded" in html
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(images) == 3                              # 2 plots of the run + the rates figure
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)     # nothing fetched from elsewhere
    # error examples: highlighted spans, the worst reports first, the report's own markup escaped
    assert "<h3>m-base" in html and "<mark" in html and "<b>missed</b>" in html
    assert "&lt;b&gt;" in html and "<b>headaches" not in html


def test_without_evaluation_it_says_which_step_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    assert report.main(["--run", "nothing"]) == 1
    assert "run 06_evaluate" in capsys.readouterr().err


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no headless browser: `apt-get install -y chromium` (Debian) to run it")
def test_a_headless_browser_shows_the_table_and_every_image(run_files, tmp_path):
    page = report.write_report(RUN)
    n_images = len(re.findall(r"<img ", page.read_text(encoding="utf-8")))
    flags = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-images-total="{n_images}"' in body and f'data-images-ok="{n_images}"' in body, body
    assert f"images shown: {n_images} of {n_images}" in dom
    assert dom.count("<table") >= 3 and "set-exact F1" in dom
    shot = tmp_path / "page.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
