"""AdamW as the loop sees it: decay only on weights of dim >= 2, live freezing, exact state.

Two implementations behind one small interface:
  torch   ``torch.optim.AdamW`` with two parameter groups (decay / no decay). A frozen
          parameter has ``requires_grad=False`` and no gradient, so AdamW skips it; its
          state is dropped, so unfreezing starts from zero moments and step 0 — what a
          fresh ``torch.optim.AdamW`` does for a parameter it has never seen.
  flat    tuneterm_kernels' ``FlatAdamW``: flat fp32 buffers, one fused launch per step
          (Triton on CUDA; its PyTorch path elsewhere), freezing by a segment flag, a
          learning-rate factor per segment (LoRA+).
The learning rate and weight decay are passed in each step (the schedule is a pure
function of the step, computed by the loop). Each loads the other's checkpointed state
(a run resumed with other kernels: a GPU run on the CPU, ``auto`` resolving otherwise):
the same moments and steps, so the run goes on where it was, not from fresh moments.
"""

from __future__ import annotations

import torch


def split_decay(named_params) -> tuple[list, list]:
    """(decay, no_decay): weights of dim >= 2 decay; biases and norms do not (nanoGPT)."""
    decay, no_decay = [], []
    for name, p in named_params:
        (decay if p.dim() >= 2 else no_decay).append((name, p))
    return decay, no_decay


class TorchAdamW:
    impl = "torch"

    def __init__(self, named_params, *, betas, eps, lr_scale=None):
        self.names = {p: n for n, p in named_params}
        self.params = {n: p for n, p in named_params}
        decay, no_decay = split_decay(named_params)
        self.n_decay = sum(p.numel() for _, p in decay)
        self.n_no_decay = sum(p.numel() for _, p in no_decay)
        groups = [{"params": [p for _, p in decay], "weight_decay": 0.0, "decay": True, "lr_scale": 1.0},
                  {"params": [p for _, p in no_decay], "weight_decay": 0.0, "decay": False, "lr_scale": 1.0}]
        # LoRA+: parameters with a learning-rate factor get groups of their own, so that
        # without one the two groups and their arithmetic are exactly as before.
        self.scaled = set(lr_scale or {})
        if self.scaled:
            for g in list(groups):
                mine = [p for p in g["params"] if self.names[p] in self.scaled]
                g["params"] = [p for p in g["params"] if self.names[p] not in self.scaled]
                if mine:  # one factor for all of them (LoRA+: B's learning rate over A's)
                    groups.append({**g, "params": mine, "lr_scale": float(lr_scale[self.names[mine[0]]])})
        # The fused implementation (CPU and CUDA) is ~7x faster than the per-tensor loop on
        # a 2-core CPU (MiniLM: 0.37 s against 2.7 s a step) and just as deterministic.
        try:
            self.opt = torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps, fused=True)
        except (RuntimeError, TypeError):  # a device without a fused kernel
            self.opt = torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps, foreach=False)

    def trainable(self) -> list:
        return [p for p in self.params.values() if p.requires_grad]

    def grad_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self.trainable() if p.grad is not None]
        if not grads:
            return torch.zeros(())
        # Summed in float64: an fp32 norm of a large gradient (tiny-llama's head, 30522 x 64)
        # is off by ~1e-4 relative on the CPU, more than the gap allowed between process counts.
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0, dtype=torch.float64)
                                                     for g in grads]), 2.0)

    def step(self, lr: float, weight_decay: float, grad_scale: float = 1.0) -> None:
        if grad_scale != 1.0:
            for p in self.trainable():
                if p.grad is not None:
                    p.grad.mul_(grad_scale)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["lr_scale"]  # x * 1.0 == x: unscaled groups are unchanged
            if g["decay"]:
                g["weight_decay"] = weight_decay
        self.opt.step()

    def set_lr_scale(self, factor: float) -> None:
        """LoRA+ live: the factor of the parameters given an ``lr_scale`` at construction."""
        if not self.scaled:
            raise ValueError("set_lr_scale: this optimizer was built without lr_scale")
        for g in self.opt.param_groups[2:]:
            g["lr_scale"] = float(factor)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def set_frozen(self, params, frozen: bool) -> None:
        # Freezing drops the state (no optimizer memory for frozen weights); unfreezing
        # therefore starts from zero moments and step 0.
        for p in params:
            self.opt.state.pop(p, None)

    def state_tensors(self) -> tuple[dict, dict]:
        tensors, steps = {}, {}
        for p, st in self.opt.state.items():
            if not st:
                continue
            n = self.names[p]
            tensors[f"exp_avg/{n}"] = st["exp_avg"]
            tensors[f"exp_avg_sq/{n}"] = st["exp_avg_sq"]
            steps[n] = float(st["step"])
        return tensors, {"impl": "torch", "steps": steps}

    def load_state(self, tensors: dict, meta: dict) -> None:
        if meta.get("impl") == "flat":  # FlatAdamW's (the run trained with the other kernels)
            meta = torch_meta_of_flat(tensors, meta)
        self.opt.state.clear()
        for n, step in meta.get("steps", {}).items():
            p = self.params[n]
            self.opt.state[p] = {
                "step": torch.tensor(step, dtype=torch.float32),
                "exp_avg": tensors[f"exp_avg/{n}"].to(p.device).clone(),
                "exp_avg_sq": tensors[f"exp_avg_sq/{n}"].to(p.device).clone(),
            }


class FlatAdamWAdapter:
    """tuneterm_kernels.FlatAdamW behind the same interface."""

    def __init__(self, named_params, *, betas, eps, impl: str, lr_scale=None):
        from tuneterm_kernels.adamw import FlatAdamW

        self.impl = impl
        self.betas, self.eps = betas, eps
        self.params = {n: p for n, p in named_params}
        self.opt = FlatAdamW([(n, p, p.dim() >= 2) for n, p in named_params], impl=impl)
        self.scaled = sorted(lr_scale or {})
        for factor in sorted(set((lr_scale or {}).values())):
            self.opt.set_lr_scale([n for n in self.scaled if lr_scale[n] == factor], factor)
        decay, no_decay = split_decay(named_params)
        self.n_decay = sum(p.numel() for _, p in decay)
        self.n_no_decay = sum(p.numel() for _, p in no_decay)

    def trainable(self) -> list:
        return [p for p in self.params.values() if p.requires_grad]

    def grad_norm(self) -> torch.Tensor:
        return self.opt.grad_norm()

    def step(self, lr: float, weight_decay: float, grad_scale: float = 1.0) -> None:
        self.opt.step(lr=lr, weight_decay=weight_decay, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                      grad_scale=grad_scale)

    def set_lr_scale(self, factor: float) -> None:
        """LoRA+ live: the factor of the parameters given an ``lr_scale`` at construction."""
        if not self.scaled:
            raise ValueError("set_lr_scale: this optimizer was built without lr_scale")
        self.opt.set_lr_scale(self.scaled, float(factor))

    def zero_grad(self) -> None:
        self.opt.zero_grad()

    def set_frozen(self, params, frozen: bool) -> None:
        self.opt.set_active(list(params), not frozen)

    def state_tensors(self) -> tuple[dict, dict]:
        tensors, meta = self.opt.state_dict()
        return tensors, {"impl": "flat", **meta}

    def load_state(self, tensors: dict, meta: dict) -> None:
        if meta.get("impl") == "torch":  # TorchAdamW's (the other kernels, or an FSDP run)
            tensors, meta = self._of_torch(tensors, meta)
        self.opt.load_state_dict(tensors, {k: v for k, v in meta.items() if k != "impl"})

    def _of_torch(self, tensors: dict, meta: dict) -> tuple[dict, dict]:
        """A TorchAdamW state in this optimizer's format. Both hold the same moments and
        step per parameter and drop them on freezing, so the moments carry over exactly;
        an active parameter torch never stepped has zero moments at step 0 here."""
        _, layout = self.opt.state_dict()  # the parameters as they are (frozen groups already restored)
        steps, out = meta.get("steps", {}), {}
        for name, p in layout["params"].items():
            if p["dtype"] != "float32":
                raise ValueError(f"{name}: a torch AdamW state has no fp32 master weights for a {p['dtype']} "
                                 "parameter")
            p["step"] = int(steps.get(name, 0)) if p["active"] else 0
            if p["active"]:
                zeros = torch.zeros_like(self.params[name], dtype=torch.float32)
                for k in ("exp_avg", "exp_avg_sq"):
                    out[f"{k}/{name}"] = tensors.get(f"{k}/{name}", zeros)
        return out, layout


def torch_meta_of_flat(tensors: dict, meta: dict) -> dict:
    """A FlatAdamW state's meta in TorchAdamW's terms (the tensors are named alike): the
    steps of the active parameters that have stepped. A bf16 model's fp32 masters have no
    place in the torch optimizer (it trains fp32 parameters only)."""
    if any(k.startswith("master/") for k in tensors):
        raise ValueError("the checkpoint's optimizer keeps fp32 master weights of bf16 parameters, which the "
                         "torch AdamW does not hold")
    return {"impl": "torch", "steps": {n: p["step"] for n, p in meta.get("params", {}).items()
                                       if p.get("active") and p.get("step", 0) > 0}}


def build(named_params, hp, *, impl: str, dtype: torch.dtype, lr_scale: dict | None = None):
    """``impl`` is the resolved kernel choice ("triton" | "torch"). ``lr_scale``
    ({parameter name: factor}, LoRA+) gives those parameters lr x factor (both optimizers)."""
    betas = (hp.adam_beta1, hp.adam_beta2)
    if impl == "triton" or dtype != torch.float32:
        # bf16 parameters need fp32 master weights: only the flat optimizer keeps them.
        return FlatAdamWAdapter(named_params, betas=betas, eps=hp.adam_eps, impl=impl, lr_scale=lr_scale)
    return TorchAdamW(named_params, betas=betas, eps=hp.adam_eps, lr_scale=lr_scale)
