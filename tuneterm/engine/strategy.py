"""What differs between one process and many, behind one object (Lightning Fabric's
strategies): the loop calls these and never asks whether it is distributed.

``Single`` is one process: every collective is an identity, so the single-process suite
exercises the same loop. ``DDP`` is N processes of one session started by
torch.distributed's elastic agent (tuneterm.engine.launch): every rank holds the whole
model; a step's micro-batches are split across ranks by rows, the loss weights and the
gradients are summed across ranks, and rank 0 — the leader — owns the control channel,
the run lock, the run directory's files and the exit code.

``FSDP`` (FSDP2, engine/fsdp.py) shards each block's weights and the optimizer's moments
across ranks, with the same rows, sums and edits as DDP.

Under DDP, gradients are summed by one all-reduce per step over the trainable parameters, in a fixed
order (not DistributedDataParallel's hooks): freezing and unfreezing live change only
which tensors take part, and two ranks' sum is the same whichever arrives first, so a
replay at the same process count is bit-identical.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os

import torch

from tuneterm.errors import UserError

# Seconds a collective waits for a rank before the group gives up: a rank killed mid-step
# ends the others within this (the elastic agent then tears the group down).
TIMEOUT_ENV = "TUNETERM_DIST_TIMEOUT_S"


class GroupLost(RuntimeError):
    """A collective failed: another rank is gone (killed, out of host memory). The attempt
    is a crash to resume from the last checkpoint, not a training failure."""


def _collective(fn):
    def call(self, *args):
        try:
            return fn(self, *args)
        except RuntimeError as e:  # gloo/nccl: a peer closed the connection or timed out
            raise GroupLost(f"rank {self.rank}: a rank of the group is gone ({str(e).splitlines()[0][:200]})") from e
    return call


class Single:
    rank = 0
    world = 1
    is_leader = True
    name = "single"
    every_rank_computes = False  # FSDP: its gathers are collectives, so no rank may skip a forward

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's rows [a, b) of a micro-batch of ``n`` rows (contiguous, in order)."""
        return 0, n

    def all_sum(self, values: list[float]) -> list[float]:
        """The sums over ranks of a few float64 scalars (one collective)."""
        return list(values)

    def reduce_gradients(self, params) -> None:
        """Sum the gradients of ``params`` over ranks (identity here)."""

    def run(self, model, fn, *args):
        """``fn(model, *args)``: how the loop computes with the model (FSDP wraps it)."""
        return fn(model, *args)

    def grad_norm(self, opt) -> float:
        """The global gradient norm of the optimizer's parameters (every rank holds whole
        gradients here and under DDP, after ``reduce_gradients``)."""
        return float(opt.grad_norm())

    def broadcast(self, obj):
        """Rank 0's list of JSON-able messages on every rank (one collective when empty)."""
        return obj

    def barrier(self) -> None:
        """Every rank has reached this point."""

    def no_sync(self):
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class DDP(Single):
    name = "ddp"

    def __init__(self, backend: str, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "60")))
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timeout)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_leader = self.rank == 0
        self.backend = backend
        self.device = device if backend == "nccl" else torch.device("cpu")

    def rows(self, n: int) -> tuple[int, int]:
        # Contiguous shares in rank order; the first n % world ranks take one row more.
        base, extra = divmod(n, self.world)
        a = self.rank * base + min(self.rank, extra)
        return a, a + base + (1 if self.rank < extra else 0)

    @_collective
    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    @_collective
    def reduce_gradients(self, params) -> None:
        params = [p for p in params if p.requires_grad]
        for p in params:  # a rank whose rows never reached a parameter still sends zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1).to(torch.float32) for p in params]).to(self.device)
        self.dist.all_reduce(flat)
        flat = flat.cpu() if self.device.type != params[0].device.type else flat
        i = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[i:i + n].view_as(p.grad))
            i += n

    @_collective
    def broadcast(self, obj):
        # JSON, not pickle (control messages are JSON already): its length first, one small
        # collective, and the bytes only when there are some, so that a boundary with no
        # message costs one broadcast of one integer.
        data = json.dumps(obj).encode() if self.is_leader and obj else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        self.dist.broadcast(size, src=0)
        if not int(size):
            return obj if self.is_leader else []
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device) if self.is_leader
               else torch.empty(int(size), dtype=torch.uint8, device=self.device))
        self.dist.broadcast(buf, src=0)
        return obj if self.is_leader else json.loads(buf.cpu().numpy().tobytes())

    @_collective
    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class FSDP(DDP):
    name = "fsdp"
    every_rank_computes = True  # the gathers are collectives: no rank may skip a forward

    def __init__(self, backend: str, device: torch.device) -> None:
        super().__init__(backend, device)
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(self.device.type, (self.world,))

    def check(self, acc, session, lora) -> None:
        """What this strategy cannot train, refused before anything is built."""
        if acc.param_dtype != torch.float32 or acc.impl == "triton":
            raise UserError('distributed.strategy: "fsdp" trains fp32 parameters with the torch optimizer '
                            '(bf16 through precision = "bf16" autocast); set runtime.kernels to "auto" or '
                            '"torch" and model.dtype to float32')

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``fully_shard`` each block, then a root around the model; gradients summed, not
        averaged. Returns the model (its parameters now sharded); ``run`` computes with it."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from tuneterm.engine.fsdp import Root
        from tuneterm.engine.layers import blocks

        mp = MixedPrecisionPolicy() if self.device.type != "cuda" else \
            MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
        for block in blocks(model):
            fully_shard(block, mesh=self.mesh, mp_policy=mp)
        self.root = Root(model)
        fully_shard(self.root, mesh=self.mesh, mp_policy=mp)
        for m in self.root.modules():
            if hasattr(m, "set_gradient_divide_factor") and hasattr(m, "unshard"):
                m.set_gradient_divide_factor(1.0)
                m.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
        return model

    def run(self, model, fn, *args):
        """``fn(model, *args)`` inside the root's forward: the weights outside the blocks
        (embeddings, head, final norm) are gathered for it, and its backward reduces them.
        A task computes its loss from the model's parts (the decoder stack, then the head),
        so the model's own forward is not what runs."""
        return self.root(fn, *args)

    def reduce_gradients(self, params) -> None:
        """FSDP's reduce-scatter summed them during the backward."""

    @_collective
    def grad_norm(self, opt) -> float:
        """The global norm of the sharded gradients: each rank's float64 sum of squares of its
        shards, summed across ranks (one all-reduce), as TorchAdamW sums whole ones."""
        local = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in opt.trainable():
            if p.grad is not None:
                g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                local += torch.linalg.vector_norm(g.detach(), 2.0, dtype=torch.float64).to(self.device) ** 2
        self.dist.all_reduce(local)
        return math.sqrt(float(local))


def world_from_env() -> int:
    """The group size torchrun's agent gave this process (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def for_session(session, device: torch.device) -> Single:
    """The strategy this process runs: Single outside an elastic agent's group."""
    if world_from_env() <= 1:
        return Single()
    if session.distributed.strategy == "fsdp":
        return FSDP(session.distributed.backend, device)
    return DDP(session.distributed.backend, device)
