"""The reference model of preference tuning: where the log-probabilities that the policy's
are compared with come from (``[preference] reference``).

  auto         under LoRA, the policy itself with its adapters switched off (PEFT's
               ``disable_adapter``: the base weights, no second copy in memory); otherwise
               a frozen copy of the model as built, on the trainer's device and dtype
  precompute   every training and validation pair's reference log-probs, computed once
               before step 1 by the untrained model (adapters off under LoRA), kept in the
               run directory as ``reference-<fingerprint>.safetensors``; the fingerprint
               covers the model's weights, the encoded pairs, max_length and the dtype, so
               a resume, a replay or a later run on the same data and model reuses the file
               (found in its own run, the run it replays, or any run of the workspace)
  none         no reference (simpo and orpo are reference-free)

The reference always runs in eval mode under ``no_grad``: it never sees dropout.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import shutil
from pathlib import Path

import numpy as np
import torch

from tuneterm.engine.pref_loss import REFERENCE_FREE

CACHE = "reference-{}.safetensors"
SPLITS = ("train", "val")


def kind(p, lora: bool) -> str:
    """"none" | "precompute" | "adapters-off" | "frozen-copy" for ``[preference]`` ``p``."""
    if p.loss in REFERENCE_FREE or p.reference == "none":
        return "none"
    if p.reference == "precompute":
        return "precompute"
    return "adapters-off" if lora else "frozen-copy"


@contextlib.contextmanager
def forward(model, adapters_off: bool):
    """``model`` as the reference: eval mode (no dropout), no gradient, adapters off when
    asked; its training mode is restored after."""
    was = model.training
    model.eval()
    off = model.disable_adapter() if adapters_off else contextlib.nullcontext()
    try:
        with torch.no_grad(), off:
            yield model
    finally:
        model.train(was)


def frozen_copy(model: torch.nn.Module, acc) -> torch.nn.Module:
    """A frozen copy of ``model`` (on its device and dtype), compiled when the run compiles."""
    from tuneterm.engine import accel

    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return accel.maybe_compile(ref, acc)


def fingerprint(model, data, max_length: int, dtype) -> str:
    """What the cached log-probs depend on: the model's weights (sampled, as LoRA's base
    fingerprint), every pair's tokens in split order, max_length and the dtype."""
    from tuneterm.engine.lora import fingerprint as weights_fingerprint

    h = hashlib.sha256(weights_fingerprint(model).encode())
    h.update(repr((max_length, str(dtype))).encode())
    for split in (data.train, data.val):
        h.update(str(len(split)).encode())
        for p in split.pairs:
            h.update(np.asarray([*p.prompt_ids, -1, *p.chosen_ids, -2, *p.rejected_ids, -3], dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def _candidates(env, name: str) -> list:
    own = Path(env.run_dir) / name
    out = [own]
    if env.replay_of is not None:
        out.append(Path(env.replay_of) / name)
    if env.workspace is not None:
        out += sorted((Path(env.workspace) / "runs").glob(f"*/{name}"))
    return [p for p in dict.fromkeys(out) if p.is_file()]


def _read(path: Path, sizes: dict) -> dict | None:
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
    except Exception:  # a damaged or foreign file: computed again
        return None
    want = {f"{s}_{side}": sizes[s] for s in SPLITS for side in ("chosen", "rejected")}
    if set(t) != set(want) or any(t[k].shape != (n,) for k, n in want.items()):
        return None
    return t


def load_or_compute(model, data, env, max_length: int, compute) -> tuple[str, str]:
    """Attach the reference log-probs to ``data.train`` and ``data.val`` (``Pairs.ref``),
    read from a cache file or computed by ``compute(dataset) -> (chosen, rejected)`` and
    written to the run directory (by rank 0 alone); returns (file name, "cached" | "computed")."""
    from safetensors.torch import save

    from tuneterm.rundir import write_atomic

    # On several processes rank 0 looks for the file and decides for every rank: it sends the
    # values it read (one broadcast), or every rank computes them in memory at once — under
    # FSDP each forward is a collective, so all ranks compute or none does — and rank 0 alone
    # writes the run directory.
    strategy = env.strategy
    lead = strategy is None or strategy.is_leader
    name = CACHE.format(fingerprint(model, data, max_length, (env.dtype, env.acc.autocast_dtype)))
    sizes = {"train": len(data.train), "val": len(data.val)}
    found = None
    for path in _candidates(env, name) if lead else []:
        found = _read(path, sizes)
        if found is not None:
            if path != Path(env.run_dir) / name:
                shutil.copyfile(path, Path(env.run_dir) / f".{name}.copy")
                Path(env.run_dir, f".{name}.copy").replace(Path(env.run_dir) / name)
            break
    if strategy is not None and strategy.world > 1:
        sent = strategy.broadcast({k: v.tolist() for k, v in found.items()} if found is not None else None)
        if not lead and sent:  # float32 values through JSON's float: exact
            found = {k: torch.tensor(v, dtype=torch.float32) for k, v in sent.items()}
    how = "cached" if found is not None else "computed"
    if found is None:
        found = {}
        for split in SPLITS:
            chosen, rejected = compute(getattr(data, split))
            found[f"{split}_chosen"], found[f"{split}_rejected"] = chosen.float().cpu(), rejected.float().cpu()
        if lead:
            write_atomic(Path(env.run_dir) / name, save(found))
    for split in SPLITS:
        getattr(data, split).ref = (found[f"{split}_chosen"], found[f"{split}_rejected"])
    return name, how
