"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically and
verified before use.

    checkpoints/step-00000100/
        model.safetensors       the model's weights (and buffers)
        optimizer.safetensors   AdamW moments (and master weights for the flat optimizer)
        state.json              step, data position, current knobs, edit-log position,
                                early-stopping state, optimizer scalars — plain JSON
        manifest.json           size and sha256 of each file above, written last

Nothing is pickled: a checkpoint can be inspected with any safetensors/JSON reader and
loading one cannot run code. A checkpoint is written into a temporary folder, every file
fsynced, then the folder renamed into place and the parent fsynced — a kill at any point
leaves either the old set of checkpoints or the new one, never a half-written folder.

What the rename cannot protect against is damage afterwards (a full disk truncating a
copy, a file edited or replaced by hand). ``verify`` checks a checkpoint against its
manifest; ``latest_intact`` picks the newest one that passes (and loads, when given a
loader), listing the others with the reason (a resume's choice; a reader's — best, last
or step-N — is loaded.pick). Checkpoints of round 1 have no manifest:
they are "unverified": checked for shape (safetensors headers against file sizes,
state.json parses) and tried, an older one taken when loading fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, Protocol

from safetensors.torch import load_file, save_file

from tuneterm.rundir import CHECKPOINT_DONE, checkpoint_name, checkpoint_steps

FORMAT = 1
MANIFEST = "manifest.json"
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")
# A sharded checkpoint (strategy = "fsdp", fsdp.py): each tensor file is a DCP folder.
SHARDED = "sharded"
SHARDED_DIRS = {"model.safetensors": "model/", "optimizer.safetensors": "optimizer/"}
SHARDED_FILES = ("model/.metadata", "optimizer/.metadata")
STATE = CHECKPOINT_DONE
READ_FILES = ("model.safetensors", STATE)  # what eval, predict and export read (the optimizer is a resume's)
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on a header


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


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class Weights(Protocol):
    """What a checkpoint holds of a model and loads back into it: the trainer's
    ``weights.ModelWeights`` (every weight, or with LoRA only what trains), or a module."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, tensors: dict, strict: bool = True): ...


def save(ckpt_root: Path, step: int, weights: Weights, opt_tensors: dict, state: dict) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # Plain copies: parameters may be views into the flat optimizer's buffers (shared
    # storage that safetensors rightly refuses to save as is).
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in weights.state_dict().items()}
    save_file(tensors, str(tmp / "model.safetensors"))
    save_file({k: v.detach().contiguous().cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
    return seal(tmp, final, list(TENSOR_FILES), state)


def seal(tmp: Path, final: Path, names: list[str], state: dict, layout: str | None = None) -> Path:
    """Finish a checkpoint written into ``tmp`` (its tensor files ``names``, relative):
    state.json, every file fsynced, the manifest last, then ``tmp`` renamed to ``final``.
    ``layout`` "sharded": the tensors are DCP folders (fsdp.py), listed file by file."""
    ckpt_root = final.parent
    (tmp / STATE).write_text(json.dumps({"format": FORMAT, **state}, indent=1, allow_nan=False))
    files = {}
    for name in (*names, STATE):
        _fsync_file(tmp / name)
        files[name] = {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    for d in {(tmp / n).parent for n in names} - {tmp}:
        _fsync_dir(d)
    # Last, so that a manifest vouches only for files already on disk.
    extra = {"layout": layout} if layout else {}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, **extra, "files": files}, indent=1))
    _fsync_file(tmp / MANIFEST)
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


# -- verification ---------------------------------------------------------------------------

def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (None: it is one): its 8-byte header
    length, a JSON header, and tensor data that ends exactly at the end of the file. A
    pickle (``torch.save``) under a .safetensors name is named as such, never loaded."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = fh.read(n) if 0 < n <= min(_MAX_HEADER, size - 8) else b""
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as e:
        return f"{name}: cannot read: {e.strerror or e}"
    try:
        meta = json.loads(header) if header else None
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict):
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            return f"{name} is a pickle (a torch.save file), not safetensors: refused, loading it could run code"
        if size < 8 or size - 8 < n <= _MAX_HEADER:
            return f"{name} is truncated ({size} bytes, cut inside its header)"
        return f"{name} is not a safetensors file"
    try:
        end = max([int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"] or [0])
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{name} has a malformed safetensors header"
    want = 8 + n + end
    if size < want:
        return f"{name} is truncated ({size} of {want} bytes)"
    if size > want:
        return f"{name} has {size - want} bytes after its tensors"
    return None


def _read_json(path: Path) -> tuple[object, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{path.name} is not valid JSON ({str(e).splitlines()[0]})"
    except OSError as e:
        return None, f"{path.name}: cannot read: {e.strerror or e}"


def verify(path: Path, files: tuple = (*TENSOR_FILES, STATE)) -> tuple[str | None, bool]:
    """(why the checkpoint at ``path`` cannot be used or None, whether a manifest vouched
    for it). Without a manifest (round 1) the shape of every file is checked instead.
    ``files``: the ones the caller reads (a resume all; eval, predict and export
    ``READ_FILES``); state.json is always checked."""
    manifest, problem = _read_json(path / MANIFEST)
    if problem and (path / MANIFEST).exists():
        return problem, False
    if manifest is not None:
        listed = manifest.get("files") if isinstance(manifest, dict) else None
        sharded = isinstance(manifest, dict) and manifest.get("layout") == SHARDED
        need = (*SHARDED_FILES, STATE) if sharded else (*TENSOR_FILES, STATE)
        if not isinstance(listed, dict) or any(f not in listed for f in need):
            return f"{MANIFEST} does not list {', '.join(need)}", False
        if sharded:  # a tensor file asked for is its DCP folder's every file
            files = [n for n in listed if any(n.startswith(SHARDED_DIRS[f]) for f in files if f in SHARDED_DIRS)]
        for name in dict.fromkeys((*files, STATE)):
            info, f = listed[name], path / name
            if not isinstance(info, dict) or not isinstance(info.get("size"), int):
                return f"{MANIFEST}: a malformed entry for {name}", False
            if not f.is_file():
                return f"{name} is missing", False
            size = f.stat().st_size
            if size != info["size"]:
                what = "truncated" if size < info["size"] else "changed"
                return f"{name} is {what}: {size} bytes, {info['size']} when written", False
            if _sha256(f) != info.get("sha256"):
                return f"{name} does not match its checksum (changed after it was written)", False
    else:
        for name in (f for f in TENSOR_FILES if f in files):
            problem = safetensors_problem(path / name)
            if problem:
                return problem, False
    state, problem = _read_json(path / STATE)
    if problem:
        return problem, manifest is not None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        fmt = state.get("format") if isinstance(state, dict) else None
        return f"{STATE}: checkpoint format {fmt!r} is not {FORMAT}", manifest is not None
    return None, manifest is not None


def latest_intact(ckpt_root: Path, try_load: Callable[[Path], object] | None = None
                  ) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes ``verify`` (and, with ``try_load``, loads without
    an error), and every newer one skipped as (path, reason), newest first."""
    skipped: list[tuple[Path, str]] = []
    for step in reversed(checkpoint_steps(ckpt_root)):
        path = ckpt_root / checkpoint_name(step)
        problem, verified = verify(path)
        if problem is None and try_load is not None:
            try:
                try_load(path)
            except Exception as e:  # noqa: BLE001 - any failure to load means: try an older one
                kind = "" if verified else "unverified (no manifest): "
                problem = f"{kind}loading failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``.corrupt-step-N`` (kept for inspection, never
    listed or loaded again); returns its new path."""
    dest = path.with_name(f".corrupt-{path.name}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f".corrupt-{path.name}-{n}")
    os.rename(path, dest)
    return dest


def unusable_message(skipped: list[tuple[Path, str]]) -> str:
    """One line for a run none of whose checkpoints can be used."""
    listed = "; ".join(f"{p.name}: {why}" for p, why in skipped)
    return (f"checkpoints: none of the {len(skipped)} checkpoints can be used ({listed}); "
            f"remove the checkpoints folder to train the run again from step 0")


def read_state(path: Path) -> dict:
    state = json.loads((path / STATE).read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r} is not {FORMAT}")
    return state


def is_sharded(path: Path) -> bool:
    """A checkpoint written by several ranks with DCP (strategy = "fsdp")."""
    return (path / SHARDED_FILES[0]).is_file() and not (path / TENSOR_FILES[0]).exists()


def tensors(path: Path, which: str = "model", device="cpu") -> dict:
    """A checkpoint's model (or optimizer) tensors, whole, on this process: its safetensors
    file, or a sharded checkpoint's DCP folder gathered (no process group needed)."""
    if is_sharded(path):
        return {k: v.to(device) for k, v in full_tensors(path / which).items()}
    return load_file(str(path / f"{which}.safetensors"), device=str(device))


def full_tensors(folder: Path) -> dict:
    """Every tensor of a DCP folder, whole, on this process (no process group needed)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = dcp.FileSystemReader(str(folder)).read_metadata()
    sd = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype)
          for k, m in meta.state_dict_metadata.items() if isinstance(m, TensorStorageMetadata)}
    if sd:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(sd, checkpoint_id=str(folder), no_dist=True)
    return sd


def tensor_names(path: Path, which: str = "model") -> list[str]:
    """The names of a checkpoint's model (or optimizer) tensors, without reading them."""
    if is_sharded(path):
        import torch.distributed.checkpoint as dcp

        return list(dcp.FileSystemReader(str(path / which)).read_metadata().state_dict_metadata)
    from safetensors import safe_open

    with safe_open(str(path / f"{which}.safetensors"), "pt") as f:
        return list(f.keys())


def load(path: Path, weights: Weights, device) -> tuple[dict, dict]:
    """Load a checkpoint's weights into ``weights``; return (optimizer tensors, state)."""
    # load_state_dict copies into the existing tensors, so views into flat buffers stay views.
    weights.load_state_dict(tensors(path, "model", device), strict=True)
    return tensors(path, "optimizer", device), read_state(path)


def prune(ckpt_root: Path, keep_last: int, keep_steps: set[int]) -> list[int]:
    """Delete all but the newest ``keep_last`` checkpoints and those in ``keep_steps``."""
    steps = checkpoint_steps(ckpt_root)
    keep = set(steps[-keep_last:]) | keep_steps
    removed = []
    for s in steps:
        if s not in keep:
            shutil.rmtree(ckpt_root / checkpoint_name(s), ignore_errors=True)
            removed.append(s)
    # Leftovers of a write killed halfway (a sharded one's included).
    for d in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
    return removed
