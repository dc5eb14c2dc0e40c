"""tuneterm_kernels: fused Triton kernels (seeded dropout, flat-buffer AdamW, fused linear
cross-entropy) and their exact PyTorch references. Importing this package never imports
triton itself; the op modules import it guarded, so the PyTorch paths work where triton
is absent (set TRITON_INTERPRET before the first import to use the interpreter)."""

from .runtime import interpreting, resolve_impl, triton_available

__all__ = ["resolve_impl", "triton_available", "interpreting", "linear_cross_entropy", "FusedAdamW"]


def __getattr__(name):  # lazy: the op modules import triton (guarded) only when used
    if name == "linear_cross_entropy":
        from .linear_ce import linear_cross_entropy
        return linear_cross_entropy
    if name == "FusedAdamW":
        from .fused_adamw import FusedAdamW
        return FusedAdamW
    raise AttributeError(f"module 'tuneterm_kernels' has no attribute {name!r}")
