"""``[distributed] strategy = "fsdp"``: FSDP2 (``fully_shard``; the strategy is
``strategy.FSDP``), its root module and its sharded checkpoints (torch.distributed.checkpoint).

The model is sharded per block (each layer of the transformer stack, the unit tuneterm
freezes), then at the root: every rank holds 1/N of each parameter and of the optimizer's
moments, and a block's weights are gathered only while it computes. The numbers are the
DDP strategy's: each rank takes its rows of every micro-batch, the loss weights are summed
across ranks first, and the gradients are *summed* by FSDP's reduce-scatter (its default
average is turned off), so a step is the global batch's at any process count. Unlike DDP,
every rank must run every forward and backward (the gathers are collectives): a rank whose
share of a micro-batch is empty runs one row at weight 0 (``micro.py``).

Checkpoints (``save``): every rank writes its shards of the model and of the optimizer
with DCP into one temporary folder, then — after DCP's own completion barrier — rank 0
writes state.json and the manifest (size + sha256 of every file, the DCP ones included)
last, fsyncs, and renames the folder into place: a kill at any moment leaves a checkpoint
that verifies whole or none. DCP's ``.metadata`` is a pickle; it is read only after the
manifest's checksums passed. ``full_tensors`` reads such a checkpoint on one process (no
process group: eval, predict, export, a resume on 1 process); ``load_into`` reads it, or a
single-process checkpoint, into the sharded model on any process count (DCP reshards).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


MODEL_DIR, OPTIM_DIR = "model", "optimizer"  # DCP folders inside a step's checkpoint folder


class Root(torch.nn.Module):
    """The FSDP root: whatever a task computes with the model, as one forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(self.model, *args)


# -- checkpoints ------------------------------------------------------------------------------

def save(final: Path, model_sd: dict, opt_sd: dict, state: dict, strat) -> Path:
    """A sharded checkpoint at ``final`` (see the module's docstring); every rank calls it."""
    import torch.distributed.checkpoint as dcp

    from tuneterm.engine import checkpoint as ckpt

    tmp = final.parent / f".tmp-{final.name}-group"
    if strat.is_leader:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    strat.barrier()
    dcp.save(model_sd, checkpoint_id=str(tmp / MODEL_DIR))
    dcp.save(opt_sd, checkpoint_id=str(tmp / OPTIM_DIR))
    strat.barrier()  # every rank's shards are on disk
    if strat.is_leader:
        names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        ckpt.seal(tmp, final, names, state, layout=ckpt.SHARDED)
    return final


def _shard_like(full: torch.Tensor, like) -> torch.Tensor:
    """``full`` laid out as the (possibly sharded) tensor ``like``."""
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements)
    return full.to(device=like.device, dtype=like.dtype)


def load_into(path: Path, weights, opt_like: dict) -> dict:
    """The checkpoint at ``path`` into ``weights`` (the trainer's ModelWeights, its tensors
    sharded); returns the optimizer's tensors laid out as ``opt_like`` ({tensor name: its
    parameter}). Every tensor the checkpoint holds is read (a LoRA checkpoint's set grows
    when a base group starts training), laid out as the live tensor of that name."""
    import torch.distributed.checkpoint as dcp

    from tuneterm.engine import checkpoint as ckpt

    live = dict(weights.model.named_parameters())
    live.update(weights.state_dict())
    names = ckpt.tensor_names(path)
    stranger = [n for n in names if n not in live]
    if stranger:
        raise ValueError(f"the checkpoint's tensor {stranger[0]!r} is not this model's")
    if ckpt.is_sharded(path):  # DCP reshards onto this process count
        model_sd = {n: torch.zeros_like(live[n]) for n in names}
        dcp.load(model_sd, checkpoint_id=str(path / MODEL_DIR))
        opt = {k: torch.zeros_like(p) for k, p in opt_like.items()}
        if opt:
            dcp.load(opt, checkpoint_id=str(path / OPTIM_DIR))
    else:  # one process's checkpoint: each rank takes its shards of the whole tensors
        full, full_opt = ckpt.tensors(path, "model"), ckpt.tensors(path, "optimizer")
        model_sd = {n: _shard_like(full[n], live[n]) for n in names}
        opt = {k: _shard_like(full_opt[k], p) for k, p in opt_like.items() if k in full_opt}
    weights.load_state_dict(model_sd, strict=True)
    return opt
