"""tuneterm_kernels: fused Triton kernels (seeded dropout, flat-buffer AdamW) and their
exact PyTorch references. Importing this package never imports triton; the op modules
import it guarded, so the PyTorch paths work where triton is absent."""

from .runtime import interpreting, resolve_impl, triton_available

__all__ = ["resolve_impl", "triton_available", "interpreting"]
