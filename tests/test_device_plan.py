"""Where and how each model is loaded (device, dtype, quantization) on CPU and on CUDA GPUs, checked
with described machines (no GPU needed), and the one-line refusal of a gated hub model."""
from __future__ import annotations

import pytest

from helpers import finetune, models
from helpers.models import DeviceInfo, LoadPlan, load_plan

PAPER = ("gemma-7b-it", "llama-2-7b-chat", "mistral-7b-instruct-v0.2", "llama-3-8b-instruct")
OFFLINE = ("smollm2-135m", "gemma3-270m")
CPU = DeviceInfo()
T4 = DeviceInfo("cuda", "Tesla T4", (7, 5))
A100 = DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB", (8, 0))
H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0))
TWO_GPUS = DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB", (8, 0), index=1, processes=2)


def _what(plan: LoadPlan) -> tuple:
    return plan.device, plan.dtype, plan.quantization, plan.weights


def test_every_model_key_and_device_kind():
    """The whole table: CPU float32 unchanged; small models half precision on a GPU (fp16 on a T4);
    paper models 4-bit from Unsloth's pre-quantized copy on one GPU, full precision under DDP."""
    assert set(OFFLINE + PAPER) == set(models.REGISTRY)
    for key in models.REGISTRY:
        spec = models.get_spec(key)
        own = "plain copy" if spec.offline else spec.hub_id
        assert _what(load_plan(key, CPU)) == ("cpu", "float32", None, own)
        for gpu, half in ((T4, "float16"), (A100, "bfloat16"), (H100, "bfloat16")):
            plan = load_plan(key, gpu)
            if key in OFFLINE:
                assert (plan.device, plan.dtype, plan.quantization, plan.weights) == ("cuda:0", half, None, own)
            else:
                assert (plan.device, plan.dtype, plan.quantization, plan.weights) == \
                    ("cuda:0", half, "bnb-4bit", spec.unsloth_id)
            assert gpu.name in plan.reason
        ddp = load_plan(key, TWO_GPUS)
        assert (ddp.device, ddp.dtype, ddp.quantization, ddp.weights) == ("cuda:1", "bfloat16", None, own)


def test_quantize_overrides_apply_on_cuda_only():
    assert _what(load_plan("smollm2-135m", T4, "4bit")) == ("cuda:0", "float16", "bnb-4bit", "plain copy")
    assert _what(load_plan("llama-3-8b-instruct", A100, "none")) == \
        ("cuda:0", "bfloat16", None, "meta-llama/Meta-Llama-3-8B-Instruct")
    assert _what(load_plan("llama-3-8b-instruct", CPU, "4bit")) == \
        ("cpu", "float32", None, "meta-llama/Meta-Llama-3-8B-Instruct")
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_plan("smollm2-135m", CPU, "8bit")
    with pytest.raises(KeyError, match="unknown model"):
        load_plan("gpt-2", CPU)


def test_compute_dtype_follows_compute_capability():
    assert [models.compute_dtype(d) for d in (CPU, T4, A100, H100)] == ["float32", "float16", "bfloat16", "bfloat16"]
    assert models.compute_dtype(DeviceInfo("cuda", "Tesla V100", (7, 0))) == "float16"


def test_detect_device_on_this_machine_without_cuda(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.detect_device() == CPU


def test_cpu_plan_loads_exactly_as_before(monkeypatch):
    """On CPU the planned load is load_model(key, float32, 'cpu'): byte-identical CPU results."""
    import torch
    calls = []
    monkeypatch.setattr(models, "load_model", lambda key, dtype=None, device="cpu", **kw: calls.append((key, dtype, device)))
    models.load_planned(load_plan("smollm2-135m", CPU))
    assert calls == [("smollm2-135m", torch.float32, "cpu")]


def _record_from_pretrained(monkeypatch):
    import transformers
    seen = {}

    def fake(source, **kwargs):
        seen.update(source=source, **kwargs)
        return "model"
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(fake))
    return seen


def test_4bit_plans_load_on_the_gpu_through_bitsandbytes(monkeypatch, tmp_path):
    import torch
    seen = _record_from_pretrained(monkeypatch)
    models.load_planned(load_plan("mistral-7b-instruct-v0.2", T4))
    assert seen["source"] == "unsloth/mistral-7b-instruct-v0.2-bnb-4bit"
    assert seen["device_map"] == {"": "cuda:0"} and seen["dtype"] == torch.float16
    assert "quantization_config" not in seen          # the pre-quantized copy carries its own
    seen.clear()
    monkeypatch.setattr(models, "plain_copy", lambda key: tmp_path)
    models.load_planned(load_plan("gemma3-270m", A100, "4bit"))
    q = seen["quantization_config"]
    assert seen["source"] == str(tmp_path) and q.load_in_4bit and q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_compute_dtype == torch.bfloat16


def test_an_unquantized_plan_refuses_foreign_weights():
    plan = LoadPlan("smollm2-135m", "cpu", "float32", None, "someone/else", "test")
    with pytest.raises(ValueError, match="own weights"):
        models.load_planned(plan)


def test_hf_backend_records_its_base_on_cpu_as_before():
    spec = models.get_spec("smollm2-135m")
    assert finetune._base_stats("hf", spec, "cpu") == {"base_model": spec.hub_id, "quantization": "float32"}
    paper = models.get_spec("llama-2-7b-chat")
    assert finetune._base_stats("unsloth", paper, "cuda:0") == \
        {"base_model": "unsloth/llama-2-7b-chat-bnb-4bit", "quantization": "bnb-4bit"}


def test_train_dtype_is_float16_on_a_t4(monkeypatch):
    import torch
    monkeypatch.setattr(models, "detect_device", lambda: T4)
    assert finetune.train_dtype("cuda:0") == torch.float16
    assert finetune.train_dtype("cpu") == torch.float32
    monkeypatch.setattr(models, "detect_device", lambda: H100)
    assert finetune.train_dtype("cuda:0") == torch.bfloat16


# ---- gated hub models -------------------------------------------------------------------------
class _Response:
    """Just what huggingface_hub's HTTP errors read from a response."""
    headers: dict = {}
    request = None


def _gated(repo: str):
    from huggingface_hub.errors import GatedRepoError
    return GatedRepoError(f"401 Client Error: access to model {repo} is restricted", response=_Response())


def test_a_refused_gated_model_stops_with_one_line_naming_its_page(monkeypatch):
    import transformers
    repo = "meta-llama/Llama-2-7b-chat-hf"

    def refuse(source, **kwargs):       # transformers wraps the hub's error in an OSError
        raise OSError(f"You are trying to access a gated repo. {source}") from _gated(source)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(refuse))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(models.GatedModelError) as err:
        models.load_tokenizer("llama-2-7b-chat")
    line = str(err.value)
    assert "\n" not in line and f"https://huggingface.co/{repo}" in line
    assert line.startswith("llama-2-7b-chat:") and "accept its licence" in line and "HF_TOKEN is not set" in line
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_bare_gated_error_from_model_loading_is_turned_into_the_same_line(monkeypatch):
    import transformers

    def refuse(source, **kwargs):
        raise _gated(source)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(refuse))
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(models.GatedModelError, match=r"https://huggingface.co/google/gemma-7b-it .*HF_TOKEN is set"):
        models.load_model("gemma-7b-it")


def test_other_hub_errors_pass_through_unchanged(monkeypatch):
    import transformers

    def missing(source, **kwargs):
        raise OSError(f"{source} is not a local folder and is not a valid model identifier")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(missing))
    with pytest.raises(OSError, match="not a valid model identifier"):
        models.load_tokenizer("mistral-7b-instruct-v0.2")


# ---- the constrained-decoding processor follows the scores' device -----------------------------
def test_constrained_processor_masks_scores_on_their_own_device():
    """Its tables and masks live on the CPU and the mask is moved to the scores' device, so CUDA
    logits work the same; checked here with scores on torch's `meta` device (no GPU needed)."""
    import torch

    from helpers import infer
    from helpers.constrained import RecordLogitsProcessor
    tok = models.set_padding_side(models.load_tokenizer("smollm2-135m"), "generation")
    eos = infer.stop_token_ids(tok, models.get_spec("smollm2-135m"))
    proc = RecordLogitsProcessor(tok, 49152, eos, 5, 40, mode="spans", texts=["I took Lipitor and got a rash."])
    out = proc(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 49152, device="meta"))
    assert out.device.type == "meta" and out.shape == (1, 49152)
    cpu = proc.__class__(tok, 49152, eos, 5, 40, mode="spans", texts=["I took Lipitor and got a rash."])
    allowed = cpu(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 49152))
    assert 0 < int(torch.isfinite(allowed).sum()) < 100   # a few ways to open the record, nothing else
