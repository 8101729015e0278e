"""Training speed settings (helpers.train_speed): the head-at-labels path gives the same loss, metrics
and gradients as TRL's full-position head; length buckets cover every row once with tight batches."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import config, finetune, train_log, train_speed
from helpers.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


# ---- head only at labels ------------------------------------------------------------------------
def _fused_outputs(model, batch, compact: bool):
    """Loss, TRL's per-token metrics and the LoRA gradients of one fused-head forward + backward;
    checks how many positions went through the head (all of them, or only the labelled ones)."""
    import trl.trainer.utils as trl_utils

    seen = []
    kernel = trl_utils._ChunkedLogProbFunction

    class Counting:
        @staticmethod
        def apply(hidden, *args):
            seen.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    model.zero_grad(set_to_none=True)
    trl_utils._ChunkedLogProbFunction = Counting
    try:
        with train_speed.head_at_labels(compact) as took:
            assert took == compact
            out = model(**batch, fused_lm_head=True)
            out.loss.backward()
    finally:
        trl_utils._ChunkedLogProbFunction = kernel
    labels = batch["labels"]
    want = int((labels[:, 1:] != -100).sum()) if compact else labels[:, 1:].numel()
    assert seen == [want]
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


def _compare(model, batch, tol: float, kernel_tol: float) -> None:
    """Head-at-labels against TRL's full-position head (same kernel: within tol) and against the
    model's own loss (TRL's float32 chunked log-sum-exp over the vocabulary: within kernel_tol)."""
    import torch

    standard = model(**batch).loss                        # the model's own full-logits loss
    full, g_full = _fused_outputs(model, batch, compact=False)
    compact, g_compact = _fused_outputs(model, batch, compact=True)
    assert abs(compact.loss.item() - full.loss.item()) < tol
    assert abs(full.loss.item() - standard.item()) < kernel_tol
    assert abs(compact.loss.item() - standard.item()) < kernel_tol
    assert torch.equal(compact.label_mask, full.label_mask)
    assert torch.allclose(compact.entropy, full.entropy, atol=1e-4)
    assert torch.equal(compact.is_top1, full.is_top1)
    assert g_full.keys() == g_compact.keys() and g_full
    for name in g_full:
        assert torch.allclose(g_compact[name], g_full[name], rtol=1e-4, atol=1e-6), name


def _tiny_peft_model(vocab: int = 97):
    """A randomly initialised 2-layer Llama with LoRA and TRL's fused head (no download)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             init_lora_weights=False, task_type="CAUSAL_LM"))
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    return model


def test_head_at_labels_keeps_loss_metrics_and_gradients_on_a_tiny_model():
    import torch

    model = _tiny_peft_model()
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (3, 20), generator=g)
    attention = torch.ones_like(input_ids)
    attention[1, :6] = 0                                   # a left-padded row
    labels = input_ids.clone()
    labels[:, :14] = -100                                  # prompt positions carry no label
    labels[attention == 0] = -100
    labels[2, 16] = -100                                   # a hole inside the answer
    _compare(model, {"input_ids": input_ids, "attention_mask": attention, "labels": labels}, 1e-6, 1e-5)


def test_head_at_labels_restores_trl_and_is_a_no_op_when_off():
    import trl.trainer.utils as trl_utils

    before = trl_utils._use_triton
    with train_speed.head_at_labels(False) as took:
        assert took is False and trl_utils._use_triton is before
    with pytest.raises(RuntimeError):
        with train_speed.head_at_labels(True):
            assert trl_utils._use_triton is not before
            raise RuntimeError("training failed")
    assert trl_utils._use_triton is before


@pytest.mark.slow
def test_head_at_labels_keeps_the_loss_of_a_real_smollm2_batch():
    """On real SmolLM2-135M rows head-at-labels gives TRL's full-position loss within 1e-6 (measured:
    identical), and the model's own loss within 5e-5: TRL's kernel sums a 49k-way log-sum-exp online in
    float32 whichever positions it scores, which alone moves this batch's loss by 1.09e-5."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from helpers import models
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import train_throughput as bench
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    cfg = finetune.FinetuneConfig.from_settings({"run": "t", "model": "smollm2-135m", "seed": 13,
                                                 "lora": {"r": 4, "target_modules": "all-linear"}})
    model, tok = finetune.build_hf(models.get_spec("smollm2-135m"), cfg, "cpu")
    for p in model.parameters():                          # LoRA B starts at zero: give it a gradient path
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.01)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    rows = bench.workload("smollm2-135m", tok, 3, seed=5)
    width = max(len(r["input_ids"]) for r in rows)           # right-padded, as the trainer's collator
    pad = [width - len(r["input_ids"]) for r in rows]
    batch = {"input_ids": torch.tensor([r["input_ids"] + [tok.pad_token_id] * k for r, k in zip(rows, pad)]),
             "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * k for r, k in zip(rows, pad)]),
             "labels": torch.tensor([[t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]
                                     + [-100] * k for r, k in zip(rows, pad)])}
    assert (batch["labels"] != -100).sum() < 0.3 * batch["attention_mask"].sum()
    _compare(model, dict(batch), 1e-6, 5e-5)


# ---- length buckets -----------------------------------------------------------------------------
LENGTHS = [30, 12, 55, 12, 40, 41, 7, 90, 33, 34, 35, 12, 60, 61, 5, 18, 19, 20, 44, 45, 46, 80, 81]


def test_bucket_order_covers_every_row_once_with_tight_batches():
    batch = 4
    for epoch in range(3):
        order = train_speed.bucket_order(LENGTHS, batch, seed=13, epoch=epoch)
        assert sorted(order) == list(range(len(LENGTHS)))
        ranked = sorted(LENGTHS)
        n_full = len(LENGTHS) // batch
        short = order[n_full * batch:]
        assert sorted(LENGTHS[i] for i in short) == ranked[:len(LENGTHS) - n_full * batch]
        # every full batch is a run of neighbours in length order: no batch mixes short and long rows
        blocks = {tuple(ranked[len(short) + k * batch: len(short) + (k + 1) * batch]) for k in range(n_full)}
        got = {tuple(sorted(LENGTHS[i] for i in order[k * batch:(k + 1) * batch])) for k in range(n_full)}
        assert got == blocks


def test_bucket_order_is_seeded_and_reshuffled_each_epoch():
    a = train_speed.bucket_order(LENGTHS, 4, seed=13, epoch=0)
    assert a == train_speed.bucket_order(LENGTHS, 4, seed=13, epoch=0)
    assert a != train_speed.bucket_order(LENGTHS, 4, seed=13, epoch=1)
    assert a != train_speed.bucket_order(LENGTHS, 4, seed=14, epoch=0)
    sampler = train_speed.LengthBucketSampler(LENGTHS, 4, 13)
    sampler.set_epoch(1)
    assert list(sampler) == train_speed.bucket_order(LENGTHS, 4, 13, 1) and len(sampler) == len(LENGTHS)
    assert train_speed.bucket_order([], 4, 1, 0) == []


def test_trainer_class_and_config_key():
    class Base:
        pass
    assert train_speed.trainer_class(Base, "random") is Base
    assert issubclass(train_speed.trainer_class(Base, "length_buckets"), Base)
    assert train_speed.hf_sampling_strategy("length_buckets") == "random"
    assert train_speed.hf_sampling_strategy("group_by_length") == "group_by_length"
    base = {"run": "r", "model": "smollm2-135m", "seed": 1}
    cfg = finetune.FinetuneConfig.from_settings({**base, "train_sampling_strategy": "length_buckets",
                                                 "lm_head_at_labels": True})
    assert cfg.lm_head_at_labels is True and cfg.train_sampling_strategy == "length_buckets"
    with pytest.raises(ConfigError, match="train_sampling_strategy.*must be one of"):
        finetune.FinetuneConfig.from_settings({**base, "train_sampling_strategy": "shortest_first"})


# ---- end to end: step 4 with both settings on, interrupted and resumed ----------------------------
@pytest.mark.slow
def test_speed_settings_train_and_resume_to_the_same_result(tmp_path, monkeypatch):
    """finetune.train with the head at labels and length buckets over 1.5 epochs: a run killed after
    its first checkpoint and resumed reaches the uninterrupted run's losses and adapter (the bucket
    order is a function of seed and epoch, so the resumed run sees the same batches)."""
    import torch
    from safetensors.torch import load_file

    from helpers import paths
    from test_finetune import TINY, _write_short_rows

    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "artifacts").mkdir()
    (REPO / "artifacts" / "cache").mkdir(parents=True, exist_ok=True)
    (tmp_path / "artifacts" / "cache").symlink_to(REPO / "artifacts" / "cache")
    params = config.deep_merge(TINY, {"sft": {"max_steps": 6, "save_steps": 2, "eval_steps": 3},
                                      "lm_head_at_labels": True, "train_sampling_strategy": "length_buckets"})
    for run in ("a", "b"):
        _write_short_rows(run, "smollm2-135m", n_train=8, n_val=2)
    a = finetune.train(finetune.FinetuneConfig.from_settings({**params, "run": "a"}), progress=False)
    assert a.stats["steps"] == 6 and a.stats["epochs"] == 1.5
    assert a.stats["final_val_loss"] < a.stats["base_val_loss"]
    with pytest.raises(finetune.TrainingInterrupted):
        finetune.train(finetune.FinetuneConfig.from_settings({**params, "run": "b"}),
                       callbacks=[finetune.interrupt_after_checkpoint(2)], progress=False)
    b = finetune.train(finetune.FinetuneConfig.from_settings({**params, "run": "b", "resume": True}),
                       progress=False)
    assert b.stats["resumed_from_step"] == 4
    rows_a = train_log.read_loss_csv(a.files["loss_csv"])
    rows_b = train_log.read_loss_csv(b.files["loss_csv"])
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        for k in ("train_loss", "val_loss"):
            if ra[k] is not None:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), (ra["step"], k)
    wa, wb = load_file(str(a.files["adapter_model"])), load_file(str(b.files["adapter_model"]))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    assert paths.model_dir("a", "smollm2-135m").exists()
