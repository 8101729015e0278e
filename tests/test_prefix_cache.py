"""helpers.prefix_cache: the shared-prefix layout generates exactly what plain left padding does."""
from __future__ import annotations

import pytest

from helpers import prefix_cache
from tiny_models import tiny_causal_lm


def test_common_prefix_leaves_every_sequence_a_token_of_its_own():
    assert prefix_cache.common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert prefix_cache.common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]
    assert prefix_cache.common_prefix([[7, 1], [8, 1]]) == []
    assert prefix_cache.common_prefix([[1, 2, 3]]) == [1, 2]
    assert prefix_cache.common_prefix([]) == []


def _tiny_model(model_type: str, window: int = 16):
    return tiny_causal_lm(model_type, 61, window, max_positions=128)


@pytest.mark.parametrize("model_type,window", [("llama", 0), ("gemma3", 16), ("gemma3", 32)])
def test_prefix_layout_generates_the_same_tokens_as_left_padding(model_type, window):
    import torch

    model = _tiny_model(model_type, window)
    shared = [5, 9, 14, 3, 27, 8, 8, 40, 2, 11, 19, 33]
    rests = [[21, 4], [7, 7, 30, 12, 50, 1, 2], [44], [16, 17, 18, 19, 20]]
    prompts = [shared + r for r in rests]
    prefix = prefix_cache.build(model, prompts)
    assert prefix is not None and prefix.ids == shared
    pad = 0
    kw = dict(max_new_tokens=12, do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=None)
    width = max(len(p) for p in prompts)
    plain_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    plain_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ids, mask, cache = prefix_cache.batch_inputs(prefix, prompts, pad)
    with torch.inference_mode():
        plain = model.generate(input_ids=plain_ids, attention_mask=plain_mask, **kw)[:, width:]
        cached = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kw)[:, ids.shape[1]:]
        again = model.generate(input_ids=ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
    assert torch.equal(plain, cached)
    assert torch.equal(plain, again)                # the layout alone changes nothing either
    if not prefix_cache.fits_window(model, ids.shape[1]):
        assert window == 16         # 19 columns: past the window, rows are not packed (predict falls back)
        return
    ids2, mask2, packed = prefix_cache.packed_inputs(model, prefix, prompts, pad)
    assert torch.equal(ids2, ids) and torch.equal(mask2, mask)
    assert packed.get_seq_length() == ids.shape[1] - 1      # only the last prompt column is left
    with torch.inference_mode():
        from_packed = model.generate(input_ids=ids2, attention_mask=mask2, past_key_values=packed, **kw)
    assert torch.equal(plain, from_packed[:, ids.shape[1]:])
    # the cached prefix is copied per batch, never extended in place
    assert prefix.cache.get_seq_length() == len(shared)


def test_rows_are_not_packed_past_a_sliding_window():
    model = _tiny_model("gemma3")            # sliding_window=16
    assert prefix_cache.fits_window(model, 16) and not prefix_cache.fits_window(model, 17)
    assert prefix_cache.fits_window(_tiny_model("llama"), 10_000)


def test_batch_inputs_rejects_a_prompt_without_the_prefix():
    model = _tiny_model("llama")
    prefix = prefix_cache.build(model, [[1] * 9 + [2], [1] * 9 + [3]])
    with pytest.raises(ValueError, match="does not start with the cached prefix"):
        prefix_cache.batch_inputs(prefix, [[1] * 9 + [2], [4] * 10], pad=0)
    assert prefix_cache.build(model, [[1, 2, 3], [1, 2, 4]]) is None     # too short to pay
