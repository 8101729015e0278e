"""Exports: llama.cpp's tensor layout is exactly what transformers' GGUF loader undoes; and (slow)
the merged model and the GGUF of a tiny fine-tuned SmolLM2 load back and agree with each other."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import export


@pytest.mark.parametrize("n_head,n_kv", [(9, 3), (4, 4)])
def test_llama_q_k_permutation_is_undone_by_the_transformers_gguf_loader(n_head, n_kv):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_head * 8, 24)).astype(np.float32)
    k = rng.standard_normal((n_kv * 8, 24)).astype(np.float32)
    proc = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv})
    for name, w in (("blk.0.attn_q.weight", q), ("blk.0.attn_k.weight", k)):
        laid = export.to_gguf_layout(w, name, "llama", n_head, n_kv)
        assert not np.array_equal(laid, w)                                  # really permuted
        np.testing.assert_array_equal(proc.process(laid, name).weights, w)  # and undone exactly
    v = rng.standard_normal((n_kv * 8, 24)).astype(np.float32)
    assert export.to_gguf_layout(v, "blk.0.attn_v.weight", "llama", n_head, n_kv) is v


def test_gemma_norms_are_stored_as_one_plus_w():
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor

    w = np.linspace(-0.5, 0.5, 8, dtype=np.float32)
    laid = export.to_gguf_layout(w, "blk.0.attn_norm.weight", "gemma3", 4, 1)
    np.testing.assert_allclose(Gemma2TensorProcessor().process(laid, "blk.0.attn_norm.weight").weights, w,
                               atol=1e-6)   # float32 rounding of (w + 1) - 1
    assert export.to_gguf_layout(w, "blk.0.attn_q.weight", "gemma3", 4, 1) is w


def test_names_say_the_quantization():
    assert export.gguf_name("smollm2-135m", "q8_0") == "smollm2-135m-lora-Q8_0.gguf"
    with pytest.raises(ValueError, match="quant must be one of"):
        export.write_gguf({}, export.Path("x.gguf"), export.Path("y.gguf"), quant="q2")


@pytest.mark.slow
def test_gguf_of_a_tuned_smollm2_matches_the_merged_model(tmp_path, monkeypatch):
    from tiny_adapter import MODEL, reports, scratch_root, train_tiny_adapter

    from helpers import models
    scratch_root(tmp_path, monkeypatch)
    train_tiny_adapter("t")
    merged = export.save_merged("t", MODEL)
    info = json.loads((merged / "export.json").read_text())
    assert info["dtype"] == "float16" and info["size_bytes"] > 200e6
    assert (merged / "config.json").exists() and (merged / "model.safetensors").exists()
    gguf_file = export.save_gguf("t", MODEL, "f16", merged)
    meta = json.loads(gguf_file.with_suffix(".json").read_text())
    assert gguf_file.name == "smollm2-135m-lora-F16.gguf" and meta["quantization"] == "F16"
    assert meta["size_bytes"] == gguf_file.stat().st_size > 200e6

    # metadata (tokenizer, chat template) is the base GGUF's
    import gguf
    base, ours = gguf.GGUFReader(str(models.gguf_path(models.get_spec(MODEL)))), gguf.GGUFReader(str(gguf_file))
    for key in ("tokenizer.ggml.tokens", "tokenizer.chat_template", "llama.rope.freq_base"):
        assert ours.fields[key].contents() == base.fields[key].contents(), key
    assert ours.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)

    result = export.verify("t", MODEL, gguf_file, reports(20, 60), n_logits=5, n_greedy=20, merged=merged)
    # F16 from 16-bit merged weights: every weight comes back bit for bit; logits differ only by the
    # float32 summation order of two separately allocated models (measured: 0.0 to ~0.01 on logits ~20)
    assert result["weights"]["same_names"] and result["weights"]["max_abs_weight_diff"] == 0.0
    assert result["logits"]["reports"] == 5 and result["logits"]["max_abs_logit_diff"] < 0.05
    assert result["logits"]["argmax_agreement"] == 1.0
    assert result["greedy"]["reports"] == 20 and result["greedy"]["equal"] == 20, result["greedy"]


@pytest.mark.parametrize("quant", export.QUANTS)
def test_tensor_types_norms_stay_float32_and_q8_0_dequantizes_close(quant):
    import gguf

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    data, qtype = export._encode_tensor(w, quant)
    assert qtype.name == quant.upper()
    np.testing.assert_allclose(gguf.quants.dequantize(data, qtype).reshape(w.shape), w,
                               atol=0.02 if quant == "q8_0" else 1e-3)
    norm, ntype = export._encode_tensor(w[0], quant)
    assert ntype == gguf.GGMLQuantizationType.F32 and norm.dtype == np.float32
