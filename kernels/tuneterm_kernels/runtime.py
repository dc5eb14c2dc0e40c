"""Which implementation runs: ``resolve_impl`` and the lazy, guarded Triton import.

Nothing here imports triton at module import: the PyTorch paths must work where triton
is absent, and ``TRITON_INTERPRET`` must be set before triton's first import.
"""

from __future__ import annotations

import os

import torch

IMPLS = ("triton", "torch")


def triton_available() -> bool:
    """True when ``import triton`` succeeds (it is imported here, once, on first call)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs through its CPU interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_impl(requested: str, device) -> str:
    """Turn ``auto|triton|torch`` into ``triton|torch`` for ``device``.

    auto: triton on a CUDA device when triton imports, torch otherwise.
    triton: needs a CUDA device (or ``TRITON_INTERPRET=1``, the interpreter used by the
    tests) and an importable triton, else RuntimeError with a one-line reason.
    """
    dev = torch.device(device)
    if requested == "torch":
        return "torch"
    if requested == "auto":
        return "triton" if dev.type == "cuda" and triton_available() else "torch"
    if requested == "triton":
        if dev.type != "cuda" and not interpreting():
            raise RuntimeError(
                f"--kernels triton needs a CUDA device (got {dev.type}); "
                "use --kernels torch or auto, or set TRITON_INTERPRET=1 for the (slow) interpreter"
            )
        if not triton_available():
            raise RuntimeError("--kernels triton: triton is not installed (pip install 'tuneterm[triton]')")
        return "triton"
    raise ValueError(f"kernels must be one of auto, triton, torch (got {requested!r})")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be 'triton' or 'torch' (got {impl!r}); resolve 'auto' with resolve_impl()")
    return impl
