"""What a causal LM's forward does to its logits after the head's matmul, read from its
config, so that a loss computed from the decoder's hidden states and the head's weight (the
fused linear cross-entropy, the logits at trained positions only) is the loss the model
itself defines:

  Cohere (``logit_scale``)                 logits * logit_scale
  Granite (``logits_scaling``)             logits / logits_scaling
  Gemma-2/3 (``final_logit_softcapping``), cap * tanh(logits / cap), after any scaling
  RecurrentGemma (``logits_soft_cap``)

A model whose config names none of these gets the plain matmul (mult 1, no cap).
"""

from __future__ import annotations

import torch


def transform(model) -> tuple[float, float | None]:
    """(multiplier, soft cap or None) of ``model``'s logits (PEFT-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None:
        return 1.0, None
    if hasattr(cfg, "get_text_config"):  # a multimodal config keeps these in its text part
        cfg = cfg.get_text_config()
    mult = 1.0
    if getattr(cfg, "logit_scale", None) is not None:
        mult *= float(cfg.logit_scale)
    if getattr(cfg, "logits_scaling", None) is not None:
        mult /= float(cfg.logits_scaling)
    cap = getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logits_soft_cap", None)
    return mult, (float(cap) if cap else None)


def apply(logits: torch.Tensor, mult: float, cap: float | None) -> torch.Tensor:
    """The model's logits from the head's bare ones (as its forward computes them)."""
    if mult != 1.0:
        logits = logits * mult
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits
