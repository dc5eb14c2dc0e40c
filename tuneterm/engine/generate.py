"""Greedy generation for the causal-LM samples: deterministic (argmax, no sampling), one
prompt at a time with the key/value cache, stopping at the end-of-sequence token."""

from __future__ import annotations

import torch


def _max_positions(model) -> int:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return 1 << 30


def _cache(out):
    cache = getattr(out, "cache", None)  # transformers >= 5.2x names it `cache`
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def greedy(model, prompt_ids: list, max_new_tokens: int, eos_id: int | None, device) -> list:
    """The generated token ids (without the prompt and without the final eos)."""
    was_training = model.training
    model.eval()
    try:
        limit = _max_positions(model)
        ids = torch.tensor([list(prompt_ids)[-(limit - 1):]], dtype=torch.long, device=device)
        length = ids.shape[1]
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        new: list = []
        for _ in range(max_new_tokens):
            nxt = int(out.logits[0, -1].float().argmax())
            if nxt == eos_id or length >= limit:
                break
            new.append(nxt)
            length += 1
            out = model(input_ids=torch.tensor([[nxt]], device=device), cache=_cache(out),
                        use_cache=True, logits_to_keep=1)
        return new
    finally:
        model.train(was_training)
