"""Step 5's decisions outside the notebook: variant order, backend check, the HTML examples."""
from __future__ import annotations

import pytest

from helpers import infer_step, paths, steps
from helpers.infer_step import InferResult


def test_variants_run_base_first_and_unknown_ones_fail():
    assert infer_step.ordered_variants(["lora", "base"]) == ["base", "lora"]
    assert infer_step.ordered_variants(["lora"]) == ["lora"]
    with pytest.raises(ValueError, match="unknown variants"):
        infer_step.ordered_variants(["base", "qlora"])


def test_an_unknown_backend_fails_before_any_model_loads():
    infer_step.check_backend("hf")
    with pytest.raises(ValueError, match="backend must be one of hf, vllm"):
        infer_step.check_backend("tgi")
    with pytest.raises(ValueError, match="drug_list_close_penalty is applied by the hf backend"):
        infer_step.check_backend("vllm", 2.0)


def test_examples_html_escapes_the_raw_output_and_names_the_system():
    rec = {"id": "r1", "parse_status": "ok", "text": "Lipitor gave me a rash.", "gold": {"drugs": ["Lipitor"]},
           "raw": "<script>x</script>", "grounding": [{"predicted": "rash", "status": "exact",
                                                       "start": 18, "end": 22, "field": "adverse_events"}]}
    html = infer_step.examples_html(InferResult(records={("lora", "test"): [rec]}), "m", "lora", "test")
    assert html.startswith("<h4>m-lora on test</h4>") and "&lt;script>" in html and "<script>" not in html


def test_every_numbered_notebook_is_a_registered_step():
    found = sorted(p.name for p in (paths.root() / "notebooks").glob("0[1-9]*.ipynb"))
    assert found == sorted(s.notebook for s in steps.STEPS.values())
    assert [s.name for s in steps.STEPS.values() if s.per_model] == ["03_format", "04_finetune", "05_infer"]
