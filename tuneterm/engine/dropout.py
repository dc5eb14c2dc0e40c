"""tuneterm's dropout: live ``p``, masks from a counter-based generator.

Every ``nn.Dropout`` of the model is swapped for tuneterm_kernels' ``SeededDropout``.
Its mask for a call is a pure function of (session seed, optimizer step, micro-batch, site, call) — the seed that
``DropoutContext`` derives — fed to tuneterm_kernels' Philox dropout (Triton on CUDA, its
bit-identical PyTorch generator elsewhere). So a resumed or replayed run sees exactly the
masks of the original, and a live edit of ``p`` needs no recompilation.

Attention-probability dropout is functional inside transformers' attention functions, so
tuneterm registers its own attention implementation: in training with dropout it runs the
eager formula with the module's ``SeededDropout``, and so does a model that soft-caps its
attention scores (Gemma-2); otherwise it calls SDPA.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from tuneterm_kernels import dropout as kdrop


class DropoutContext:
    """Where the loop is: the masks of one forward pass derive from (seed, step, micro).
    ``row0``: the first row of the micro-batch this process holds (a rank of a
    multi-process run holds rows [row0, ...) of it): its masks are that slice of the whole
    micro-batch's, so each unit gets the same mask whichever rank trains it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.micro = 0
        self.row0 = 0
        self._calls: dict[int, int] = {}

    def at(self, step: int, micro: int, row0: int = 0) -> None:
        self.step, self.micro, self.row0 = step, micro, row0
        self._calls.clear()

    def seed_for(self, site: int) -> int:
        call = self._calls.get(site, 0)
        self._calls[site] = call + 1
        return kdrop.mix_seed(self.seed, self.step, self.micro, site, call)


class UnitDropout(kdrop.SeededDropout):
    """A SeededDropout whose mask for rows [row0, ...) of a micro-batch is that slice of
    the whole micro-batch's mask (the leading dimension is the batch's rows: hidden states,
    attention probabilities, adapter inputs). At row0 = 0 it is SeededDropout exactly."""

    def __init__(self, p: float, impl: str, site: int, ctx: DropoutContext) -> None:
        super().__init__(p, impl=impl, site=site, seed_fn=functools.partial(ctx.seed_for, site))
        self.ctx = ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row0 = self.ctx.row0
        if row0 == 0 or not self.training or self.p == 0.0 or x.dim() == 0 or x.shape[0] == 0:
            return super().forward(x)
        start = row0 * (x.numel() // x.shape[0])  # elements of the micro-batch before this slice
        # A Philox call draws 8 elements: pad to the call boundary, so that element j of
        # this slice takes the counter and lane of element start + j of the whole batch.
        lead = start % 8
        flat = torch.cat([x.new_zeros(lead), x.reshape(-1)]) if lead else x.reshape(-1)
        self.calls += 1
        seed = kdrop._next_seed(self.seed_fn)
        out = kdrop.dropout(flat, self.p, seed, self.offset + start // 8, True, self.impl)
        return out[lead:].view_as(x)


def _site(p: float, site: int, ctx: DropoutContext, impl: str) -> kdrop.SeededDropout:
    return UnitDropout(p, impl, site, ctx)


site = _site  # for other modules that seed dropout (LoRA's adapters)


def install(model: nn.Module, ctx: DropoutContext, p: float, impl: str) -> list[kdrop.SeededDropout]:
    """Swap every nn.Dropout for a SeededDropout at ``p``; route attention through ours."""
    sites: list[kdrop.SeededDropout] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                live = _site(p, len(sites), ctx, impl)
                setattr(parent, name, live)
                sites.append(live)
    # Llama-style attention keeps its dropout as a float attribute, not a module.
    for mod in model.modules():
        if isinstance(getattr(mod, "attention_dropout", None), float):
            live = _site(p, len(sites), ctx, impl)
            mod._tt_attn_dropout = live  # a submodule without parameters: follows train()/eval()
            mod.attention_dropout = p
            sites.append(live)
    _register_attention()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("tuneterm")
    else:  # pragma: no cover - older transformers
        model.config._attn_implementation = "tuneterm"
    return sites


def set_p(model: nn.Module, sites: list[kdrop.SeededDropout], p: float) -> None:
    for s in sites:
        s.p = float(p)
    for mod in model.modules():
        if isinstance(getattr(mod, "attention_dropout", None), float):
            mod.attention_dropout = float(p)


def _attention_dropout_module(module: nn.Module) -> kdrop.SeededDropout | None:
    for attr in ("_tt_attn_dropout", "dropout", "attn_dropout"):
        d = getattr(module, attr, None)
        if isinstance(d, kdrop.SeededDropout):
            return d
    return None


def tuneterm_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                       **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    drop = _attention_dropout_module(module)
    dropping = module.training and drop is not None and drop.p != 0.0 and dropout != 0.0
    # A cap on the scores (Gemma-2's attn_logit_softcapping) is beyond SDPA: the eager formula
    if not dropping and softcap is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0,
                                      **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        rep = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros_like(attention_mask, dtype=scores.dtype).masked_fill(
                ~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    elif getattr(module, "is_causal", False) and query.shape[2] > 1:
        q, k = query.shape[2], key.shape[2]
        causal = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropping:
        weights = drop(weights)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


_REGISTERED = False


def _register_attention() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register("tuneterm", tuneterm_attention)
    # Additive float masks (causal part included): right for both of our paths.
    ALL_MASK_ATTENTION_FUNCTIONS.register("tuneterm", eager_mask)
    _REGISTERED = True
