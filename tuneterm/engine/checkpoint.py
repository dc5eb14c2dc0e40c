"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

    checkpoints/step-00000100/
        model.safetensors       the model's weights (and buffers)
        optimizer.safetensors   AdamW moments (and master weights for the flat optimizer)
        state.json              step, data position, current knobs, edit-log position,
                                early-stopping state, optimizer scalars — plain JSON

Nothing is pickled: a checkpoint can be inspected with any safetensors/JSON reader and
loading one cannot run code. A checkpoint is written into a temporary folder, every file
fsynced, then the folder renamed into place and the parent fsynced — a kill at any point
leaves either the old set of checkpoints or the new one, never a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = 1
PREFIX = "step-"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def save(ckpt_root: Path, step: int, model: torch.nn.Module, opt_tensors: dict, state: dict) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / step_dir_name(step)
    tmp = ckpt_root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # Plain copies: parameters may be views into the flat optimizer's buffers (shared
    # storage that safetensors rightly refuses to save as is).
    weights = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    save_file({k: v.detach().contiguous().cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **state}, indent=1, allow_nan=False))
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():
        # Re-saving the same step (e.g. a pause right after a periodic checkpoint).
        trash = ckpt_root / f".old-{final.name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    return final


def list_steps(ckpt_root: Path) -> list[int]:
    if not ckpt_root.is_dir():
        return []
    steps = []
    for d in ckpt_root.iterdir():
        if d.name.startswith(PREFIX) and (d / "state.json").is_file():
            try:
                steps.append(int(d.name[len(PREFIX):]))
            except ValueError:
                continue
    return sorted(steps)


def latest(ckpt_root: Path) -> Path | None:
    steps = list_steps(ckpt_root)
    return ckpt_root / step_dir_name(steps[-1]) if steps else None


def read_state(path: Path) -> dict:
    state = json.loads((path / "state.json").read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r} is not {FORMAT}")
    return state


def load(path: Path, model: torch.nn.Module, device) -> tuple[dict, dict]:
    """Load weights into ``model``; return (optimizer tensors, state)."""
    # load_state_dict copies into the existing tensors, so views into flat buffers stay views.
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)), strict=True)
    opt = load_file(str(path / "optimizer.safetensors"), device=str(device))
    return opt, read_state(path)


def prune(ckpt_root: Path, keep_last: int, keep_steps: set[int]) -> list[int]:
    """Delete all but the newest ``keep_last`` checkpoints and those in ``keep_steps``."""
    steps = list_steps(ckpt_root)
    keep = set(steps[-keep_last:]) | keep_steps
    removed = []
    for s in steps:
        if s not in keep:
            shutil.rmtree(ckpt_root / step_dir_name(s), ignore_errors=True)
            removed.append(s)
    # Leftovers of a write killed halfway.
    for d in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
    return removed
