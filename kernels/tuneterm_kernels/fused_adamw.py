"""``FusedAdamW``: the flat-buffer AdamW as a ``torch.optim.Optimizer`` for anyone's loop.

A drop-in for ``torch.optim.AdamW`` (decoupled weight decay, no amsgrad/maximize):
param groups with their own ``lr``/``weight_decay``/``betas``/``eps``, read from
``param_groups`` at every step (so lr schedulers work), ``state_dict``/``load_state_dict``
in torch's format (per parameter index: step, exp_avg, exp_avg_sq, and the fp32 master of
a bf16/fp16 parameter), and torch's freezing rule: a parameter whose ``.grad`` is None
at ``step`` (``requires_grad=False``, or no gradient reached it) is skipped and keeps its
state, which resumes when it trains again. Each param group is one ``FlatAdamW`` (one
launch per dtype within the group), built at the first ``step`` or ``load_state_dict``;
from then on the parameters' ``.data`` live in its flat buffers.

With an HF Trainer: ``Trainer(..., optimizers=(FusedAdamW(model.parameters(), lr=...), None))``.
``zero_grad(set_to_none=True)`` (torch's default, and what the Trainer does through
``model.zero_grad()``) makes autograd allocate fresh gradients that ``step`` copies into
the flat buffer; with ``set_to_none=False`` they accumulate in it in place (one pass less).
"""

from __future__ import annotations

import torch

from .adamw import FORMAT, VERSION, FlatAdamW
from .runtime import triton_available


class FusedAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, impl: str | None = None, amsgrad: bool = False,
                 maximize: bool = False):
        if amsgrad or maximize:
            raise ValueError("FusedAdamW supports neither amsgrad nor maximize")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid AdamW hyperparameters lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.impl = impl
        self._flat: list[FlatAdamW] | None = None

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_flat", None) is not None:
            raise RuntimeError("FusedAdamW: add param groups before the first step")
        super().add_param_group(param_group)

    def _build(self) -> list[FlatAdamW]:
        if self._flat is None:
            params = [p for g in self.param_groups for p in g["params"]]
            if self.impl is None:
                cuda = bool(params) and params[0].is_cuda
                self.impl = "triton" if cuda and triton_available() else "torch"
            no_grad = [p for p in params if p.grad is None]
            self._flat = [FlatAdamW([(str(k), p, True) for k, p in enumerate(g["params"])], impl=self.impl)
                          for g in self.param_groups if g["params"]]
            for p in no_grad:  # FlatAdamW bound every .grad to its view; None still means "skip"
                p.grad = None
        return self._flat

    def _groups(self):
        return zip([g for g in self.param_groups if g["params"]], self._build())

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, flat in self._groups():
            on, off = [], []
            for k, p in enumerate(flat.params):
                (on if p.grad is not None else off).append(k)
            for idx, active in ((on, True), (off, False)):
                change = [flat.names[k] for k in idx if bool(flat.active[k]) != active]
                if change:
                    flat.set_active(change, active, reset=False)
            if on:
                b1, b2 = group["betas"]
                flat.step(lr=group["lr"], weight_decay=group["weight_decay"], beta1=b1, beta2=b2,
                          eps=group["eps"])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._flat is None or set_to_none:
            super().zero_grad(set_to_none=set_to_none)
            return
        for flat in self._flat:
            flat.zero_grad()

    # ---- torch's state_dict format ---------------------------------------------------

    def state_dict(self) -> dict:
        state, groups, base = {}, [], 0
        flats = dict(zip(map(id, (g for g in self.param_groups if g["params"])), self._flat or []))
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(base, base + n))})
            flat = flats.get(id(group))
            if flat is not None:
                tensors, meta = flat.state_dict()
                for k in range(n):
                    info = meta["params"][str(k)]
                    if info["step"] == 0:
                        continue
                    st = {"step": torch.tensor(float(info["step"]))}
                    for key in ("exp_avg", "exp_avg_sq", "master"):
                        t = tensors.get(f"{key}/{k}")
                        if t is None and key != "master":  # inactive now: its kept moments
                            grp, off = flat._seg(k)
                            t = getattr(grp, key)[off:off + info["numel"]].view(flat.params[k].shape).clone()
                        if t is not None:
                            st[key] = t
                    state[base + k] = st
            base += n
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict) -> None:
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("loaded state dict has a different number of parameter groups or parameters")
        for s, g in zip(saved_groups, self.param_groups):
            g.update({k: v for k, v in s.items() if k != "params"})
        saved = {int(k): v for k, v in state_dict["state"].items()}
        for (group, flat), s in zip(self._groups(), [s for s in saved_groups if s["params"]]):
            tensors, params = {}, {}
            for k, p in enumerate(flat.params):
                st = saved.get(s["params"][k], {})
                zeros = torch.zeros_like(p, dtype=torch.float32)
                tensors[f"exp_avg/{k}"] = st.get("exp_avg", zeros).to(p.device)
                tensors[f"exp_avg_sq/{k}"] = st.get("exp_avg_sq", zeros).to(p.device)
                tensors[f"master/{k}"] = st.get("master", p.detach().float()).to(p.device)
                params[str(k)] = {"step": int(float(st.get("step", 0))), "active": True, "weight_decay": True,
                                  "numel": p.numel(), "dtype": str(p.dtype).replace("torch.", "")}
            flat.load_state_dict(tensors, {"format": FORMAT, "version": VERSION, "params": params})
