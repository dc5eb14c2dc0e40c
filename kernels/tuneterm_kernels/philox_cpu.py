"""The seeded-dropout mask on the CPU through the optional C extension ``_philox``.

Bit-identical to ``philox.philox_keep_mask`` / ``philox_uniform16`` (the same Philox-4x32-10
stream as the Triton kernel; see the module docstring of ``philox.py``) and several hundred
times faster than those int64 tensor ops (29M elements: ~11 ms of CPU with AVX2, ~24 ms with
SSE2, against ~7.7 s). ``pip install`` builds the extension where a C compiler is present
(setup.py, ``optional=True``); without it :func:`available` is False, the functions here
return None and callers keep the PyTorch generator::

    keep = philox_cpu.keep_mask(seed, offset, n, p, device)
    if keep is None:
        keep = philox_uniform16(seed, offset, n, device) >= keep_threshold(p)

``threads``: 0 lets the extension decide (currently one thread: a second did not measurably
help, and one does 29M elements in ~11 ms of CPU with AVX2); a positive number splits the
work over that many pthreads (at most 8). The result never depends on it.
"""

from __future__ import annotations

import torch

from .philox import keep_threshold

try:
    from . import _philox
except ImportError:  # pragma: no cover - exercised where no C compiler built it
    _philox = None

__all__ = ["available", "keep_mask", "uniform16", "implementation"]


def available() -> bool:
    """Whether the C extension is built and importable."""
    return _philox is not None


def implementation() -> str | None:
    """"avx2" | "sse2" | "scalar" (what the extension runs on this CPU), None without it."""
    return _philox.simd() if _philox is not None else None


def _cpu(device) -> bool:
    return device is None or torch.device(device).type == "cpu"


def _check_numel(numel) -> int:
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be an int >= 0 (got {numel!r})")
    return numel


def keep_mask(seed: int, offset: int, numel: int, p: float, device="cpu", threads: int = 0
              ) -> torch.Tensor | None:
    """The bool keep-mask of ``numel`` elements for (seed, offset) at drop probability ``p``,
    equal to ``philox.philox_keep_mask(seed, offset, numel, p)``; a new contiguous CPU
    tensor. None when the extension is not built or ``device`` is not the CPU (the caller
    uses the PyTorch generator then). Raises ValueError for a bad p, seed, offset or numel."""
    threshold = keep_threshold(p)  # validates p
    numel = _check_numel(numel)
    if _philox is None or not _cpu(device):
        return None
    out = torch.empty(numel, dtype=torch.bool)
    _philox.keep_mask(seed, offset, numel, threshold, out.data_ptr(), threads)
    return out


def uniform16(seed: int, offset: int, numel: int, device="cpu", threads: int = 0) -> torch.Tensor | None:
    """The 16-bit draws as an int32 CPU tensor, equal to ``philox.philox_uniform16``; None
    when the extension is not built or ``device`` is not the CPU."""
    numel = _check_numel(numel)
    if _philox is None or not _cpu(device):
        return None
    out = torch.empty(numel, dtype=torch.int32)
    _philox.uniform16(seed, offset, numel, out.data_ptr(), threads)
    return out
