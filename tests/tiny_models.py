"""Tiny random causal LMs of the two offline families, for tests that compare decoding paths token for token."""
from __future__ import annotations

from typing import Any


def tiny_causal_lm(model_type: str, vocab: int, window: int = 64, max_positions: int = 256) -> Any:
    """A 2-layer random model of the family (a gemma3 one has a sliding and a full attention layer)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions)
    if model_type == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=8, sliding_window=window,
                                  layer_types=["sliding_attention", "full_attention"])
    else:
        config = LlamaConfig(**common)
    return AutoModelForCausalLM.from_config(config).eval()
