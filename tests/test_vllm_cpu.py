"""vLLM for real, on the CPU (opt-in): the `vllm` backend run by vLLM's CPU build in its own
environment, against the transformers backend on the same reports, with the span grammar.

Skipped unless AE_VLLM_VENV points at an environment built by `scripts/vllm_cpu_env.sh --build-only`
(vLLM pins its own torch and transformers, so it cannot live in the study's environment)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = os.environ.get("AE_VLLM_VENV")
PYTHON = Path(VENV) / "bin" / "python" if VENV else None

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    PYTHON is None or not PYTHON.exists(),
    reason="opt-in: set AE_VLLM_VENV to an environment built by scripts/vllm_cpu_env.sh --build-only")]

GRAMMAR_CHECK = """
import json, sys, llguidance, llguidance.hf
from helpers import models
from helpers.infer_vllm import spans_grammar
tok = models.load_tokenizer("smollm2-135m")
lt = llguidance.hf.from_tokenizer(tok)
text = 'I take Lipitor 20 mg and now my "muscles" ache.\\nAlso dark urine.'
grammar = llguidance.LLMatcher.grammar_from_lark(spans_grammar(text))
def accepts(s):
    m = llguidance.LLMatcher(lt, grammar, log_level=0)
    return m.consume_tokens(tok(s, add_special_tokens=False)["input_ids"]) and m.is_accepting()
print(json.dumps([accepts(s) for s in sys.argv[1:]]))
"""


def test_span_grammar_takes_words_of_the_report_and_refuses_the_rest():
    outputs = ['{"drugs": ["Lipitor 20 mg"], "adverse_events": ["ache", "dark urine"]}',
               '{"drugs": [], "adverse_events": []}',
               '{"drugs": ["lipitor"], "adverse_events": []}',          # not the report's spelling
               '{"drugs": ["Lipi"], "adverse_events": []}',             # not a whole word
               '{"drugs": ["Lipitor"], "adverse_events": ["muscle pain"]}',   # a paraphrase
               '{"drugs": ["Lipitor"], "adverse_events": ["ache.\\nAlso dark"]}']   # control character
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    got = subprocess.run([str(PYTHON), "-c", GRAMMAR_CHECK, *outputs], capture_output=True, text=True,
                         env=env, cwd=REPO, check=True).stdout
    assert json.loads(got.strip().splitlines()[-1]) == [True, True, False, False, False, False]


def test_vllm_cpu_runs_the_tuned_adapter_and_every_output_parses(tmp_path, monkeypatch):
    from tiny_adapter import MODEL, reports, scratch_root, train_tiny_adapter

    from helpers import paths
    from helpers.io import write_jsonl
    root = scratch_root(tmp_path, monkeypatch)
    train_tiny_adapter("t")
    write_jsonl(paths.synthetic_dir("t") / "test.jsonl", reports(8, 70))
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "vllm_vs_hf.py"), "--vllm-python", str(PYTHON), "--run", "t",
           "--model", MODEL, "--n", "8", "--constrained", "spans", "--out", str(out)]
    env = dict(os.environ, AE_STUDY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    hf, vl = result["table"]
    assert hf["reports"] == vl["reports"] == 8 and hf["reports_per_s"] > 0 and vl["reports_per_s"] > 0
    assert all(r["parse_ok"] and r["parse_status"] == "ok" for r in result["vllm"])
    # spans: every string the model wrote is found verbatim in its report
    assert all(g["status"] == "exact" for r in result["vllm"] for g in r["grounding"])
    assert "every vLLM output parses: True" in done.stdout
