"""tuneterm's dropout: live ``p``, masks from a counter-based generator.

Every ``nn.Dropout`` of the model is swapped for ``LiveDropout``. Its mask for a call is a
pure function of (session seed, optimizer step, micro-batch, site, call) — the seed that
``DropoutContext`` derives — fed to tuneterm_kernels' Philox dropout (Triton on CUDA, its
bit-identical PyTorch generator elsewhere). So a resumed or replayed run sees exactly the
masks of the original, and a live edit of ``p`` needs no recompilation.

Attention-probability dropout is functional inside transformers' attention functions, so
tuneterm registers its own attention implementation: in training with dropout it runs the
eager formula with the module's ``LiveDropout``; otherwise it calls SDPA.
"""

from __future__ import annotations

import torch
from torch import nn

from tuneterm_kernels import dropout as kdrop

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*parts: int) -> int:
    """A 63-bit seed from integers (order matters); cheap and well spread."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = _splitmix64(h ^ (p & _MASK64))
    return h >> 1


class DropoutContext:
    """Where the loop is: the masks of one forward pass derive from (seed, step, micro)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.micro = 0
        self._calls: dict[int, int] = {}

    def at(self, step: int, micro: int) -> None:
        self.step, self.micro = step, micro
        self._calls.clear()

    def seed_for(self, site: int) -> int:
        call = self._calls.get(site, 0)
        self._calls[site] = call + 1
        return mix(self.seed, self.step, self.micro, site, call)


class LiveDropout(nn.Module):
    def __init__(self, p: float, site: int, ctx: DropoutContext, impl: str) -> None:
        super().__init__()
        self.p = float(p)
        self.site = site
        self.ctx = ctx
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return kdrop.dropout(x, self.p, seed=self.ctx.seed_for(self.site), offset=0, training=True, impl=self.impl)

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}, impl={self.impl}"


def install(model: nn.Module, ctx: DropoutContext, p: float, impl: str) -> list[LiveDropout]:
    """Swap every nn.Dropout for a LiveDropout at ``p``; route attention through ours."""
    sites: list[LiveDropout] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                live = LiveDropout(p, len(sites), ctx, impl)
                setattr(parent, name, live)
                sites.append(live)
    # Llama-style attention keeps its dropout as a float attribute, not a module.
    for mod in model.modules():
        if isinstance(getattr(mod, "attention_dropout", None), float):
            live = LiveDropout(p, len(sites), ctx, impl)
            mod._tt_attn_dropout = live  # plain attribute: not a submodule, not in state_dict
            mod.attention_dropout = p
            sites.append(live)
    _register_attention()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("tuneterm")
    else:  # pragma: no cover - older transformers
        model.config._attn_implementation = "tuneterm"
    return sites


def set_p(model: nn.Module, sites: list[LiveDropout], p: float) -> None:
    for s in sites:
        s.p = float(p)
    for mod in model.modules():
        if isinstance(getattr(mod, "attention_dropout", None), float):
            mod.attention_dropout = float(p)


def _attention_dropout_module(module: nn.Module) -> LiveDropout | None:
    for attr in ("_tt_attn_dropout", "dropout", "attn_dropout"):
        d = getattr(module, attr, None)
        if isinstance(d, LiveDropout):
            return d
    return None


def tuneterm_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    drop = _attention_dropout_module(module)
    if not module.training or drop is None or drop.p == 0.0 or dropout == 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0,
                                      **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        rep = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
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
