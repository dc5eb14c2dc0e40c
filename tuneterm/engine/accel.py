"""The one place in the engine that decides how a run is computed: which kernels (Triton
or PyTorch: dropout, AdamW and the causal-LM task's fused loss follow ``Accel.impl``), the
precision (fp32, bf16 autocast over fp32 master weights, or a pure bf16 model),
``torch.compile`` and the deterministic setup.

The trainer calls, in ``setup``::

    acc = accel.setup(session, device, kernels_req)   # resolves, sets determinism; UserError on bad input
    model = model.to(device=device, dtype=acc.param_dtype)
    ... install dropout / LoRA with acc.impl, build the optimizer with acc.impl, acc.param_dtype
    model = accel.maybe_compile(model, acc)            # after every module swap, before training

and around each forward (training and evaluation)::

    with accel.autocast(acc):
        loss = task.loss(model, batch)

``[runtime] precision``: ``fp32`` (and ``auto``, today: nothing changes for existing
sessions) computes in the model's dtype; ``bf16`` runs the forward under
``torch.autocast(dtype=bfloat16)`` with fp32 parameters, which are the optimizer's master
weights (the flat AdamW's fp32 buffers, or torch's). ``[model] dtype = "bfloat16"`` is the
other thing: the parameters themselves are bf16, with fp32 masters in the flat AdamW.
Both together: the model is already bf16 and autocast adds nothing, so it is skipped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from tuneterm.errors import UserError

DETERMINISTIC_CUBLAS = ":4096:8"  # cuBLAS's documented fixed-workspace setting
COMPILE_BACKEND_ENV = "TUNETERM_COMPILE_BACKEND"  # e.g. aot_eager where inductor cannot build


@dataclass(frozen=True)
class Accel:
    impl: str  # "triton" | "torch": dropout, AdamW, the causal-LM task's fused loss
    device: torch.device
    param_dtype: torch.dtype  # the model's parameters
    autocast_dtype: torch.dtype | None  # bf16 under precision = "bf16", else None
    compile: bool
    deterministic: bool


def resolve_device(requested: str) -> torch.device:
    """``auto|cpu|cuda`` -> the device a run computes on; a UserError when CUDA is asked for
    and missing."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve(kernels_req: str, device) -> str:
    """``auto|triton|torch`` -> ``triton|torch`` for ``device``; a UserError naming the flag."""
    from tuneterm_kernels.runtime import resolve_impl

    try:
        return resolve_impl(kernels_req, device)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--kernels {kernels_req}: {e}") from None


def _runtime(session, key: str, default):
    return getattr(getattr(session, "runtime", None), key, default)


def kernels_request(session, kernels_req: str | None = None) -> str:
    """What ``--kernels`` / ``runtime.kernels`` ask for, ``auto`` made ``torch`` for an FSDP
    session: its parameters are DTensor shards, which the flat (Triton) AdamW cannot hold,
    so ``auto`` picks the torch kernels on every process count (a checkpoint's optimizer
    state then resumes on 1 GPU as on 2). An explicit ``triton`` is refused by the strategy."""
    req = kernels_req or _runtime(session, "kernels", "auto")
    dist = getattr(session, "distributed", None)
    if req == "auto" and getattr(dist, "strategy", None) == "fsdp":
        return "torch"
    return req


def setup(session, device, kernels_req: str | None = None) -> Accel:
    """Everything above for ``session`` on ``device``; also applies ``set_deterministic``."""
    device = torch.device(device)
    impl = resolve(kernels_request(session, kernels_req), device)
    param_dtype = torch.bfloat16 if session.model.dtype == "bfloat16" else torch.float32
    precision = _runtime(session, "precision", "auto")
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"runtime.precision: {precision!r} is not one of auto, fp32, bf16")
    autocast_dtype = torch.bfloat16 if precision == "bf16" and param_dtype == torch.float32 else None
    acc = Accel(impl, device, param_dtype, autocast_dtype, bool(_runtime(session, "compile", False)),
                bool(_runtime(session, "deterministic", False)))
    set_deterministic(acc)
    return acc


def autocast(acc: Accel):
    """The context each forward runs in: bf16 autocast under precision = "bf16", else none."""
    if acc.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=acc.device.type, dtype=acc.autocast_dtype)


def maybe_compile(model: torch.nn.Module, acc: Accel, backend: str | None = None) -> torch.nn.Module:
    """``[runtime] compile = true``: compile the model's backbone in place — the transformer
    stack every task's computation enters (``base_model``: a classifier's forward calls it, a
    causal LM's task calls it and then the head; under PEFT, the base model's). Not the
    top-level forward: the causal-LM and preference tasks never call it, so compiling it did
    nothing for them. ``nn.Module.compile`` keeps the state_dict keys and the module tree, so
    checkpoints and live edits do not change. The dropout op is opaque to the compiler (its
    fake gives the shape); its seed is drawn outside the graph, so a new step compiles
    nothing. Backend: ``backend``, else $TUNETERM_COMPILE_BACKEND, else inductor."""
    if acc.compile:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        target = getattr(inner, "base_model", None)
        target = target if isinstance(target, torch.nn.Module) else model
        target.compile(backend=backend or os.environ.get(COMPILE_BACKEND_ENV) or "inductor")
    return model


def set_deterministic(acc: Accel) -> None:
    """``[runtime] deterministic = true``: deterministic algorithms everywhere (an op without
    one raises instead of running), cuBLAS with a fixed workspace (set before its first
    handle: the worker calls this before the model reaches the GPU), cuDNN deterministic
    without autotuning. tuneterm's own kernels (dropout, flat AdamW, fused linear CE) use
    no atomics: they are deterministic whatever this says. Off: nothing is changed."""
    if not acc.deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
