"""Gradient checkpointing that keeps tuneterm's dropout masks.

tuneterm's dropout (engine/dropout.py) draws each mask from a seed of (session seed, step,
micro-batch, site, call), where ``call`` counts the site's calls in the current forward.
A checkpointed block runs its forward twice — once without keeping activations, once in
the backward pass to rebuild them — so the recomputation would count on (call 1, 2, ...)
and draw different masks from the forward the loss came from: the gradient would be wrong.

``enable`` turns on transformers' (non-reentrant) checkpointing with a ``context_fn``:
on entry to each checkpointed forward it snapshots the dropout context's call counters,
and the recomputation runs with that snapshot (restoring the counters after), so every
site sees the same call numbers, hence the same seeds and masks, both times. With it a
run with checkpointing equals the run without, bit for bit on the CPU in fp32.
"""

from __future__ import annotations

import contextlib

from torch import nn


def _counters(dctx):
    snap: dict = {}

    @contextlib.contextmanager
    def forward():
        snap.clear()
        snap.update(dctx._calls)
        yield

    @contextlib.contextmanager
    def recompute():
        after = dict(dctx._calls)
        dctx._calls.clear()
        dctx._calls.update(snap)
        try:
            yield
        finally:
            dctx._calls.clear()
            dctx._calls.update(after)

    return forward(), recompute()


def enable(model: nn.Module, dctx) -> None:
    """Checkpoint every decoder/encoder block of ``model`` (a transformers model, possibly
    wrapped by PEFT), redrawing the same dropout masks in the recomputation."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner, "_tt_grad_ckpt", False):
        return
    kwargs = {"use_reentrant": False, "context_fn": lambda: _counters(dctx)}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.25's name
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    inner._tt_grad_ckpt = True


def context_of(model: nn.Module):
    """The DropoutContext behind ``model``'s seeded dropout sites (None without any)."""
    for mod in model.modules():
        fn = getattr(mod, "seed_fn", None)
        owner = getattr(getattr(fn, "func", None), "__self__", None)
        if owner is not None and hasattr(owner, "_calls"):
            return owner
    return None
