"""A scratch study root with a tiny fine-tuned SmolLM2 adapter (2 steps on a few short reports),
for the slow tests of the extractor and the exports. Not a test module."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
DRUGS = ["Lipitor", "Zoloft", "Humira", "Nexium", "Ambien", "Cymbalta"]
EVENTS = ["muscle pain", "nausea", "a headache", "dizziness", "dark urine", "a rash", "dry mouth"]


def reports(n: int, offset: int = 0) -> list[dict]:
    """n short canonical reports (0 or 1 drug, 2 events), the same every time."""
    out = []
    for i in range(offset, offset + n):
        d, e, e2 = DRUGS[i % len(DRUGS)], EVENTS[i % len(EVENTS)], EVENTS[(i + 3) % len(EVENTS)]
        if i % 5 == 4:
            out.append({"id": f"r{i}", "text": f"Since the new pill I have {e} and {e2}.",
                        "drugs": [], "adverse_events": [e, e2]})
        else:
            out.append({"id": f"r{i}", "text": f"I take {d} since May and I got {e} and {e2}.",
                        "drugs": [d], "adverse_events": [e, e2]})
    return out


def scratch_root(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    """An AE_STUDY_ROOT sharing the real configs and model cache (so no model is rebuilt)."""
    mp.setenv("AE_STUDY_ROOT", str(tmp))
    (tmp / "configs").symlink_to(REPO / "configs")
    (tmp / "artifacts").mkdir()
    (REPO / "artifacts" / "cache").mkdir(parents=True, exist_ok=True)
    (tmp / "artifacts" / "cache").symlink_to(REPO / "artifacts" / "cache")
    return tmp


def train_tiny_adapter(run: str, steps: int = 2) -> Path:
    """Format a few reports as step 3 does and train `steps` LoRA steps as step 4 does."""
    from helpers import finetune, formatting, models, paths

    spec, tok = models.get_spec(MODEL), models.load_tokenizer(MODEL)
    formatting.write_formatted(run, MODEL, {"train": formatting.format_split(tok, spec, reports(8), 512),
                                            "val": formatting.format_split(tok, spec, reports(2, 50), 512)})
    cfg = finetune.FinetuneConfig.from_settings(dict(
        run=run, model=MODEL, seed=13, backend="auto",
        lora=dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"),
        sft=dict(learning_rate=2e-3, lr_scheduler_type="constant", warmup_steps=0.0, num_train_epochs=1,
                 max_steps=steps, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                 save_steps=steps, eval_steps=steps, max_length=512, logging_steps=1)))
    finetune.train(cfg, progress=False)
    return paths.model_dir(run, MODEL)
