"""Step 4: the training config, backend choice, statistics, atomic publishing and resume."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import config, finetune, paths, train_log
from helpers.config import ConfigError
from helpers.io import DataError, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A scratch root sharing the real configs and model cache (so no model is rebuilt)."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "artifacts").mkdir()
    (REPO / "artifacts" / "cache").mkdir(parents=True, exist_ok=True)
    (tmp_path / "artifacts" / "cache").symlink_to(REPO / "artifacts" / "cache")
    return tmp_path


# ---- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu-smoke", "paper"])
def test_every_profile_section_builds_a_config(profile):
    prof = config.load_profile(str(REPO / "configs" / f"{profile}.yaml"))
    settings = config.step_settings(prof, "04_finetune", prof["models"][0])
    cfg = finetune.FinetuneConfig.from_settings(settings)
    assert cfg.run == prof["run"] and cfg.seed == prof["seed"]
    assert cfg.to_params() == settings                     # passed through, nothing renamed or dropped
    assert cfg.sft["max_length"] == prof["max_length"]     # written once per profile, read by 03 and 04


def test_sft_config_passes_the_profile_arguments_through(tmp_path):
    prof = config.load_profile("cpu")
    cfg = finetune.FinetuneConfig.from_settings(config.step_settings(prof, "04_finetune", "smollm2-135m"))
    args = finetune.sft_config(cfg, tmp_path, has_eval=True, device="cpu", resuming=False)
    for key, value in cfg.sft.items():
        assert getattr(args, key) == value, key
    assert args.per_device_eval_batch_size == cfg.sft["per_device_train_batch_size"]
    assert args.seed == args.data_seed == prof["seed"] and args.completion_only_loss


def test_config_rejects_unknown_keys_and_bad_values():
    base = {"run": "r", "model": "smollm2-135m", "seed": 1}
    with pytest.raises(ConfigError, match="unknown key.*lora_rank"):
        finetune.FinetuneConfig.from_settings({**base, "lora_rank": 8})
    with pytest.raises(ConfigError, match="finetune.lora.*unexpected keyword argument 'lora_rank'"):
        finetune.FinetuneConfig.from_settings({**base, "lora": {"lora_rank": 8}})
    with pytest.raises(ConfigError, match="finetune.sft.*unexpected keyword argument 'batch_size'"):
        finetune.FinetuneConfig.from_settings({**base, "sft": {"batch_size": 4}})
    with pytest.raises(TypeError):
        finetune.FinetuneConfig.from_settings({"run": "r", "model": "m"})          # seed is required
    for section, key, value, why in [
            (None, "backend", "tpu", "must be one of"), ("lora", "lora_dropout", 1.5, r"\[0, 1\)"),
            ("sft", "per_device_train_batch_size", 0, ">= 1"), ("sft", "warmup_steps", -0.1, ">= 0"),
            ("lora", "r", 2.5, "integer"), ("sft", "lr_scheduler_type", "cosinus", "not a valid SchedulerType"),
            ("sft", "optim", "adamx", "not a valid OptimizerNames")]:
        settings = {**base, key: value} if section is None else {**base, section: {key: value}}
        with pytest.raises(ConfigError, match=f"finetune\\.{section or key}.*{why}"):
            finetune.FinetuneConfig.from_settings(settings)
    with pytest.raises(ConfigError, match="num_train_epochs"):
        finetune.FinetuneConfig.from_settings({**base, "sft": {"num_train_epochs": 0, "max_steps": -1}})


def test_command_line_overrides_are_nested_and_typed():
    got = finetune.parse_set(["sft.learning_rate=3e-4", "resume=true", "lora.target_modules=[q_proj, v_proj]",
                              "sft.max_steps=10", "lora.lora_dropout=0.05"])
    assert got == {"sft": {"learning_rate": 3e-4, "max_steps": 10}, "resume": True,
                   "lora": {"target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.05}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        finetune.parse_set(["max_steps"])


# ---- backend choice (this machine has no CUDA GPU: CI's situation) ----------------------------
def test_cpu_machine_picks_hf_and_never_imports_unsloth():
    from helpers.models import get_spec

    if finetune.cuda_available():
        pytest.skip("this check is for machines without a CUDA GPU")
    gpu_spec = get_spec("llama-3-8b-instruct")
    assert gpu_spec.unsloth_id
    assert finetune.choose_backend("auto", gpu_spec) == ("hf", "no CUDA GPU")
    assert finetune.choose_backend("hf", gpu_spec) == ("hf", "asked for")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        finetune.choose_backend("unsloth", gpu_spec)
    assert "unsloth" not in sys.modules


# ---- statistics -------------------------------------------------------------------------------
def test_examples_after_follows_the_trainer_epoch_layout():
    # 10 rows, batch 4: micro-batches of 4, 4, 2; one optimizer step each
    assert [train_log.examples_after(s, 10, 4, 1) for s in range(7)] == [0, 4, 8, 10, 14, 18, 20]
    # grad_accum 2: steps of (4+4) and (2) examples
    assert [train_log.examples_after(s, 10, 4, 2) for s in range(5)] == [0, 8, 10, 18, 20]


def test_loss_rows_csv_roundtrip_and_plot(tmp_path):
    history = [{"eval_loss": 2.5, "step": 0}, {"loss": 2.4, "step": 1}, {"loss": 2.1, "step": 2},
               {"eval_loss": 2.0, "step": 2}, {"train_runtime": 3.0, "step": 2}]
    rows = train_log.loss_rows(history)
    assert rows == [{"step": 0, "train_loss": None, "val_loss": 2.5},
                    {"step": 1, "train_loss": 2.4, "val_loss": None},
                    {"step": 2, "train_loss": 2.1, "val_loss": 2.0}]
    csv_path = train_log.write_loss_csv(rows, tmp_path / "loss.csv")
    assert csv_path.read_text().splitlines()[0] == "step,train_loss,val_loss"
    assert train_log.read_loss_csv(csv_path) == rows
    png = train_log.plot_loss(rows, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_last_complete_checkpoint_skips_a_partial_save(tmp_path):
    assert finetune.last_complete_checkpoint(tmp_path / "none") is None
    for step, complete in [(2, True), (4, True), (6, False), (10, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert finetune.last_complete_checkpoint(tmp_path).name == "checkpoint-4"


# ---- publishing (a tiny Llama built from a config: no model file needed) ----------------------
def _tiny_peft(seed: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    cfg = finetune.FinetuneConfig(run="r", model="m", seed=seed, lora={"target_modules": "all-linear"})
    targets = finetune.resolve_target_modules(cfg, base)
    assert targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    return base, model


def test_publish_adapter_replaces_only_with_a_finished_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.models import get_spec

    spec = get_spec("smollm2-135m")
    _, first = _tiny_peft(1)
    files = finetune.publish_adapter(first, tmp_path, spec)
    assert sorted(p.name for p in files) == sorted(finetune.PUBLISHED_ADAPTER_FILES)
    conf = json.loads((tmp_path / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == spec.hub_id and conf["r"] == 4
    # PEFT stores the targets as a set; the published file lists them sorted, the same in every process
    assert conf["target_modules"] == sorted(conf["target_modules"]) and len(conf["target_modules"]) == 7
    before = (tmp_path / "adapter_model.safetensors").read_bytes()

    class Broken:
        def save_pretrained(self, folder):
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError):
        finetune.publish_adapter(Broken(), tmp_path, spec)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(finetune.PUBLISHED_ADAPTER_FILES)

    # the published files load back into PEFT with the same weights
    torch.manual_seed(0)
    fresh = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path))
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    key = next(k for k in saved if "q_proj.lora_A" in k)
    name = key.replace(".weight", ".default.weight")
    assert torch.equal(dict(loaded.named_parameters())[name], saved[key])


# ---- data checks ------------------------------------------------------------------------------
def _reports(n: int, offset: int = 0) -> list[dict]:
    drugs = ["Lipitor", "Zoloft", "Humira", "Nexium", "Ambien"]
    events = ["muscle pain", "nausea", "a headache", "dizziness", "dark urine", "a rash"]
    out = []
    for i in range(offset, offset + n):
        d, e = drugs[i % len(drugs)], events[i % len(events)]
        e2 = events[(i + 2) % len(events)]
        out.append({"id": f"r{i}", "text": f"I take {d} since May and I got {e} and {e2}.",
                    "drugs": [d], "adverse_events": [e, e2]})
    return out


def _write_formatted(run: str, model: str, n_train: int, n_val: int, max_length: int = 512) -> None:
    from helpers import formatting, models

    spec = models.get_spec(model)
    tok = models.load_tokenizer(model)
    split = {"train": formatting.format_split(tok, spec, _reports(n_train), max_length),
             "val": formatting.format_split(tok, spec, _reports(n_val, 100), max_length)}
    formatting.write_formatted(run, model, split)


@pytest.mark.slow
def test_tokenize_rows_rejects_bad_rows(repo):
    from helpers import models

    _write_formatted("t", "smollm2-135m", 2, 1)
    train, _ = finetune.load_training_rows("t", "smollm2-135m")
    spec, tok = models.get_spec("smollm2-135m"), models.load_tokenizer("smollm2-135m")
    ok = finetune.tokenize_rows(tok, spec, train, 512)
    assert all(sum(r["completion_mask"]) > 0 for r in ok)
    assert all(r["completion_mask"][-1] == 1 or r["completion_mask"][-2] == 1 for r in ok)
    with pytest.raises(DataError, match=r"row 'r0'.*> max_length 20"):
        finetune.tokenize_rows(tok, spec, train, 20)
    with pytest.raises(DataError, match=r"row 'r1'.*not prompt \+ completion"):
        finetune.tokenize_rows(tok, spec, [train[0], {**train[1], "text": "x"}], 512)
    with pytest.raises(DataError, match=r"row 'r0'.*another tokenizer"):
        finetune.tokenize_rows(tok, spec, [{**train[0], "n_tokens": 3}], 512)
    with pytest.raises(FileNotFoundError, match="run 03_format"):
        finetune.load_training_rows("missing", "smollm2-135m")


# ---- training and resume (SmolLM2-135M, a handful of steps) -----------------------------------
def _write_short_rows(run: str, model: str, n_train: int, n_val: int) -> None:
    """Formatted rows with a one-line instruction (~45 tokens each instead of ~180), so that three
    short trainings fit in the test's time; same row contract as step 3."""
    from helpers import formatting, models
    from helpers.schemas import answer_json
    from helpers.templates import tokenize_example

    spec, tok = models.get_spec(model), models.load_tokenizer(model)
    for split, reports in (("train", _reports(n_train)), ("val", _reports(n_val, 100))):
        rows = []
        for rep in reports:
            msgs = [{"role": "system", "content": "Extract drugs and adverse events as JSON."},
                    {"role": "user", "content": rep["text"]}]
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            text = tok.apply_chat_template(msgs + [{"role": "assistant", "content": answer_json(rep)}],
                                           tokenize=False)
            completion = text[len(prompt):]
            ids = tokenize_example(tok, spec, prompt, completion)
            rows.append({"id": rep["id"], "messages": msgs, "prompt": prompt, "completion": completion,
                         "text": text, "n_tokens": len(ids["input_ids"]),
                         "n_prompt_tokens": ids["completion_mask"].index(1)})
        write_jsonl(formatting.output_files(run, model)[split], rows)


TINY = dict(model="smollm2-135m", seed=13, backend="auto",
            lora=dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"),
            sft=dict(learning_rate=2e-3, lr_scheduler_type="cosine", warmup_steps=0.0, num_train_epochs=1,
                     max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=1, save_steps=2,
                     eval_steps=2, max_length=256, logging_steps=1))


@pytest.mark.slow
def test_resume_after_a_kill_reaches_the_same_result(repo):
    """Run A trains 4 steps uninterrupted; run B is interrupted right after its first checkpoint
    (step 2), then resumed: same loss curve, same final losses, same adapter weights."""
    import torch
    from safetensors.torch import load_file

    for run in ("a", "b"):
        _write_short_rows(run, "smollm2-135m", n_train=8, n_val=2)

    a = finetune.train(finetune.FinetuneConfig.from_settings({**TINY, "run": "a"}), progress=False)
    assert a.backend == "hf"
    assert a.stats["steps"] == 4 and a.stats["resumed_from_step"] is None
    assert a.stats["examples_this_session"] == 8 and a.stats["tokens_this_session"] > 8 * 30
    assert a.stats["final_val_loss"] < a.stats["base_val_loss"]
    assert 0 < a.stats["supervised_share"] < 0.8
    for key in ("adapter_config", "adapter_model", "trainer_stats", "loss_csv", "loss_png"):
        assert a.files[key].exists(), key
    assert a.stats["memory"]["device"] == "cpu" and a.stats["memory"]["peak_rss_train_gb"] > 0.1

    cfg_b = finetune.FinetuneConfig.from_settings({**TINY, "run": "b"})
    with pytest.raises(finetune.TrainingInterrupted, match="step 2"):
        finetune.train(cfg_b, callbacks=[finetune.interrupt_after_checkpoint(1)], progress=False)
    out_b = paths.model_dir("b", "smollm2-135m")
    assert not (out_b / "adapter_model.safetensors").exists()      # nothing published by a killed run
    assert finetune.last_complete_checkpoint(out_b / "checkpoints").name == "checkpoint-2"

    b = finetune.train(finetune.FinetuneConfig.from_settings({**TINY, "run": "b", "resume": True}),
                       progress=False)
    assert b.stats["resumed_from_step"] == 2 and b.stats["steps_this_session"] == 2
    assert b.stats["examples_this_session"] == 4

    rows_a = train_log.read_loss_csv(a.files["loss_csv"])
    rows_b = train_log.read_loss_csv(b.files["loss_csv"])
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b):
        for k in ("train_loss", "val_loss"):
            assert (ra[k] is None) == (rb[k] is None)
            if ra[k] is not None:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), (ra["step"], k)
    assert b.stats["final_val_loss"] == pytest.approx(a.stats["final_val_loss"], rel=1e-4)
    wa, wb = load_file(str(a.files["adapter_model"])), load_file(str(b.files["adapter_model"]))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)


def test_progress_lines_print_every_n_steps_and_the_last():
    """The plain progress lines that reach the ./run_all.sh terminal: every n-th step and the last,
    with the latest logged loss and an ETA."""
    from types import SimpleNamespace
    lines: list[str] = []
    cb = finetune.progress_lines(every=2, printer=lambda s, flush: lines.append(s))
    state = SimpleNamespace(global_step=0, max_steps=5)
    cb.on_train_begin(None, state, None)
    for step in range(1, 6):
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": 1.0 / step})
        cb.on_step_end(None, state, None)
    assert [line.split()[2] for line in lines] == ["2/5", "4/5", "5/5"]
    assert "loss 0.2000" in lines[-1] and "~0 s left" in lines[-1]
